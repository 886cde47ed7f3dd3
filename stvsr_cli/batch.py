"""Batches: many videos into one folder, one `upscale_video` each.

Each input goes to FOLDER/<name><ext>, keeping its container unless a
format is given. An input whose output is already there is skipped: an
output appears only when its run succeeded, so one that exists is complete.
One failing input does not stop the others; each ends as a `BatchItem`
(done, skipped or failed, with the error in one line), for the summary
table and `--json`. The network is loaded once for the whole batch.

Under torchrun the inputs are dealt out to the processes, each upscaling
its own inputs alone, and rank 0 gathers every result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .distributed import Ranks
from .errors import StvsrError
from .files import write_atomically
from .stream import load_upscaler
from .upscale import Progress, UpscaleOptions, UpscaleResult, upscale_video

# What a folder given as an input contributes: the files with a video
# extension, not its subfolders. (A file named on the command line is taken
# whatever its name.)
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv",
    ".ogv", ".3gp", ".y4m", ".gif", ".mxf", ".vob",
})


@dataclass(frozen=True)
class BatchItem:
    """How one input went: status 'done', 'skipped' (its output exists) or
    'failed'; the figures of a run that was done."""

    input: str
    output: str
    status: str
    input_frames: int | None = None
    output_frames: int | None = None
    output_fps: float | None = None
    seconds: float | None = None
    error: str | None = None

    @classmethod
    def from_result(cls, input: Path | str, result: UpscaleResult) -> BatchItem:
        return cls(str(input), str(result.output), "done", result.input_frames, result.output_frames,
                   float(result.output_fps), round(result.seconds, 3))


def collect_inputs(paths: list[Path]) -> list[Path]:
    """The videos named: files as given, folders as the video files in them,
    sorted by name."""
    inputs: list[Path] = []
    for path in paths:
        if path.is_dir():
            inputs += sorted(p for p in path.iterdir()
                             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            inputs.append(path)
    if not inputs:
        raise StvsrError(f"no video files in {', '.join(map(str, paths))}; name video files or folders holding them")
    return inputs


def output_path(input: Path, folder: Path, format: str | None) -> Path:
    suffix = "." + format.lstrip(".") if format else input.suffix
    return folder / (input.stem + suffix)


def upscale_batch(
    inputs: list[Path],
    folder: Path,
    options: UpscaleOptions,
    *,
    format: str | None = None,
    ranks: Ranks = Ranks(),
    progress: Callable[[Path], Progress | None] = lambda input: None,
    on_item: Callable[[BatchItem], None] = lambda item: None,
) -> list[BatchItem]:
    """Upscale each of `inputs` into `folder`, going on past failures; one
    `BatchItem` per input, in input order (on every process of a launch).
    `progress(input)` gives the progress callback of that input's run;
    `on_item` hears of each input as this process finishes it."""
    if not folder.is_dir():
        raise StvsrError(f"{folder} is not a folder; for several inputs OUTPUT must be an existing folder")
    outputs = [output_path(input, folder, format) for input in inputs]
    upscaler = load_upscaler(options.weights, device=ranks.device(options.device), precision=options.precision,
                             self_ensemble=options.self_ensemble)
    seen: dict[Path, Path] = {}
    items: dict[int, BatchItem] = {}
    for index, (input, output) in enumerate(zip(inputs, outputs)):
        if output in seen:  # every process sees these, whichever does the work
            items[index] = BatchItem(str(input), str(output), "failed",
                                     error=f"{seen[output]} goes to the same output; rename one of them")
        seen.setdefault(output, input)
    for index in ranks.deal(range(len(inputs))):
        if index in items:
            on_item(items[index])
            continue
        input, output = inputs[index], outputs[index]
        if output.exists() and not options.overwrite:
            item = BatchItem(str(input), str(output), "skipped", error="the output exists")
        else:
            try:
                result = upscale_video(input, output, options, progress(input), upscaler=upscaler)
                item = BatchItem.from_result(input, result)
            except StvsrError as error:
                item = BatchItem(str(input), str(output), "failed", error=str(error))
            except Exception as error:  # a bug shows on its input, and the others still run
                item = BatchItem(str(input), str(output), "failed", error=f"unexpected {type(error).__name__}: {error}")
        items[index] = item
        on_item(item)
    gathered: dict[int, BatchItem] = {}
    for share in ranks.gather(items):
        gathered.update(share)
    return [gathered[index] for index in range(len(inputs))]


def write_json(items: list[BatchItem], path: Path | str) -> None:
    """The per-input results as a JSON list, written atomically."""
    text = json.dumps([dataclasses.asdict(item) for item in items], indent=2) + "\n"
    write_atomically(path, lambda temporary: temporary.write_text(text))
