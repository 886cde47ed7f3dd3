"""Draw the crop picture of weights/README.md: one in-between frame of a
moving object, side by side: ground truth | bicubic + blend | bicubic + mci |
stvsr. The frames are made as `stvsr eval` makes them (inputs are the even
GT frames shrunk 4x; the network runs through the same windows and stitching).

    python tools/in_between_picture.py data/val_fast/bikes_shot0 --frame 13 --box 250,120,160,120 \
        --out weights/in_between.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from stvsr_cli.evaluate import _MotionCompensated, find_clips
from stvsr_cli.frames import crop_to_multiple, make_lr, read_frame
from stvsr_cli.stream import load_upscaler, upscale_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path, help="a clip folder (frames, or GT/ inside)")
    parser.add_argument("--frame", type=int, required=True, help="an odd GT frame index (an in-between frame)")
    parser.add_argument("--box", required=True, help="crop LEFT,TOP,WIDTH,HEIGHT in GT pixels")
    parser.add_argument("--weights", type=Path, help="weights file (default: the shipped ones)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.frame % 2 != 1:
        parser.error("--frame must be odd: in-between frames have odd indices")
    left, top, width, height = (int(v) for v in args.box.split(","))

    (clip,) = find_clips(args.clip)
    gt = [crop_to_multiple(read_frame(path).float() / 255) for path in clip.gt]
    inputs = [make_lr(frame) for frame in gt[0::2]]
    upscaler = load_upscaler(args.weights, device="cpu")
    predictions = upscale_frames(((frame, False) for frame in inputs), upscaler)
    model = next(frame for index, frame in enumerate(predictions) if index == args.frame).cpu()
    predictions.close()

    k = args.frame // 2
    bicubic = [F.interpolate(inputs[i][None], scale_factor=4, mode="bicubic", align_corners=False)[0] for i in (k, k + 1)]
    mci = _MotionCompensated(clip, 4)
    try:
        mci_frame = F.interpolate(mci.between(k)[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    finally:
        mci.close()
    panels = {
        "ground truth": gt[args.frame],
        "bicubic + blend": (bicubic[0] + bicubic[1]) / 2,
        "bicubic + mci": mci_frame,
        "stvsr": model,
    }
    label_height, gap = 18, 4
    sheet = Image.new("RGB", (len(panels) * (width + gap) - gap, height + label_height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, (label, frame) in enumerate(panels.items()):
        crop = frame.clamp(0, 1)[:, top : top + height, left : left + width]
        image = Image.fromarray(crop.mul(255).round().byte().permute(1, 2, 0).numpy())
        x = column * (width + gap)
        sheet.paste(image, (x, label_height))
        draw.text((x + 2, 3), label, fill="black")
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
