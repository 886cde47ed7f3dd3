"""How samples/bbb_128x72.mp4 was made (needs the project's shared data folder).

Frames 40-79 of Big Buck Bunny's 1280x720 trailer clip, converted to RGB with
the file's BT.709 matrix, shrunk 10x with antialiased bicubic filtering (the
same kind of degradation the network is trained to undo), and encoded with
libx264 at CRF 12, tagged BT.709, limited range.

    python samples/make_sample.py ../shared/data/train/videos/bigbuckbunny.mp4 samples/bbb_128x72.mp4
"""

import subprocess
import sys

import av
import imageio_ffmpeg
import torch
import torch.nn.functional as F

FIRST, COUNT, WIDTH, HEIGHT = 40, 40, 128, 72


def main(source: str, target: str) -> None:
    frames = []
    with av.open(source) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate
        for index, frame in enumerate(container.decode(stream)):
            if FIRST <= index < FIRST + COUNT:
                rgb = frame.reformat(format="rgb24", src_colorspace="itu709", src_color_range="MPEG").to_ndarray()
                frames.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    small = F.interpolate(torch.stack(frames), size=(HEIGHT, WIDTH), mode="bicubic", antialias=True)
    data = (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy().tobytes()
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(fps), "-i", "pipe:0",
        "-vf", "scale=out_color_matrix=bt709:out_range=tv",
        "-c:v", "libx264", "-crf", "12", "-preset", "veryslow", "-pix_fmt", "yuv420p",
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
        "-movflags", "+faststart", "-metadata", "title=Big Buck Bunny (c) Blender Foundation, CC-BY 3.0",
        target,
    ]
    subprocess.run(command, input=data, check=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
