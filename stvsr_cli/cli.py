"""The `stvsr` command: a thin layer over the library.

Each command parses its options, calls one library function and reports.
Errors a user can fix (`StvsrError`) are printed as one line with a non-zero
exit status; `stvsr --debug ...` (or STVSR_DEBUG=1) shows the traceback.
Ctrl-C, and the SIGTERM or SIGHUP that `kill`, `timeout`, `docker stop` or a
closing terminal send, stop a command the same way: its clean-up runs, one
line says so, and the exit status is the shell's 128 + the signal number.

This module imports only click and what `--help` needs: PyTorch, PyAV and
rich take seconds to load, so each command imports the library where it
runs, and `stvsr --help` answers at once.
"""

from __future__ import annotations

import sys

# Ctrl-C while the command line itself loads (a second or more on a busy
# machine) would print a traceback from the middle of an import: the `stvsr`
# script imports this module before any of its code can catch anything.
try:
    import dataclasses
    import json
    import logging
    import os
    import signal
    from contextlib import contextmanager
    from pathlib import Path

    import click

    from . import __version__
    from .config import PRESETS
    from .defaults import DEFAULT_SCENE_THRESHOLD, DEFAULT_SEGMENT_SECONDS, DEFAULT_TILE
    from .errors import StvsrError, first_line
    from .options import BenchOptions, TrainOptions
except KeyboardInterrupt:
    sys.stderr.write("stvsr: interrupted\n")
    raise SystemExit(130) from None


def _defaults(options_class) -> dict:
    """The defaults of an options dataclass's fields, which the commands show and use: each is written
    once, in the library."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(options_class)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }


_TRAIN = _defaults(TrainOptions)
_BENCH = _defaults(BenchOptions)


def _train_option(flag: str, *args, **kwargs):
    """An option of `stvsr train` with TrainOptions's default for it."""
    return click.option(flag, *args, default=_TRAIN[flag[2:].replace("-", "_")], show_default=True, **kwargs)


# Signals that stop a command from outside, as Ctrl-C does from the keyboard.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived. A KeyboardInterrupt, so that every clean-up
    written for Ctrl-C (the encoder's staging folder, the pipeline's threads)
    runs for it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Group(click.Group):
    """Turns exceptions into one line on stderr and an exit status, and gives
    every command a `--debug` flag (`stvsr upscale --debug ...` works as well
    as `stvsr --debug upscale ...`)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)
        return lambda function: register(_debug_option(function))

    def invoke(self, ctx: click.Context):
        received: list[int] = []
        with _stop_on_signals(received):
            try:
                return super().invoke(ctx)
            except (click.exceptions.Exit, click.ClickException, click.Abort):
                raise
            except (KeyboardInterrupt, Exception) as error:
                if _debug(ctx):
                    raise
                # A signal also reaches ffmpeg and the loader processes, whose
                # failure may be what surfaced first: the signal is the cause.
                signum = received[0] if received else getattr(error, "signum", None)
                click.echo(_one_line(error, signum), err=True)
                if signum is not None:
                    sys.exit(128 + signum)
                sys.exit(130 if isinstance(error, KeyboardInterrupt) else 1)


@contextmanager
def _stop_on_signals(received: list[int]):
    """While a command runs, SIGTERM and SIGHUP raise `_Stopped` in the main
    thread; a second signal during the clean-up is only noted, so that the
    clean-up finishes."""

    def stop(signum: int, frame) -> None:
        received.append(signum)
        if len(received) == 1:
            raise _Stopped(signum)

    try:
        previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _one_line(error: BaseException, signum: int | None = None) -> str:
    if signum is not None:
        return f"stvsr: stopped by {signal.Signals(signum).name}"
    if isinstance(error, KeyboardInterrupt):
        return "stvsr: interrupted"
    if isinstance(error, StvsrError):
        return f"stvsr: error: {error}"
    return (
        f"stvsr: unexpected {type(error).__name__}: {first_line(error, otherwise='')}. "
        "Run again with `stvsr --debug ...` for the traceback and report it."
    )


def _debug(ctx: click.Context) -> bool:
    return (
        bool(ctx.params.get("debug"))
        or ctx.meta.get("stvsr.debug", False)
        or os.environ.get("STVSR_DEBUG", "") not in ("", "0")
    )


def _debug_option(function):
    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.meta["stvsr.debug"] = True  # meta is shared by the whole context tree

    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=remember,
                        help="Show the full traceback when something fails.")(function)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="stvsr")
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
def main(debug: bool) -> None:
    """Space-time video super-resolution: 4x the width and height and twice
    the frame rate, with the MEGAN network (You et al., WACV 2022) or the
    Zooming Slow-Mo network it builds on (Xiang et al., CVPR 2020).

    \b
    Examples:
      stvsr upscale samples/bbb_128x72.mp4 bbb_x4.mp4
      stvsr upscale in.mp4 out.mp4 --weights xiang2020zooming.pth
      stvsr eval data/vid4 --baselines
      stvsr info --preset paper
    """


@main.command()
@click.option("--preset", type=click.Choice(list(PRESETS)), help="Describe a fresh network of this preset.")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Describe the network stored in this weights file.  [default: the shipped weights]",
)
def info(preset: str | None, weights: Path | None) -> None:
    """Show a network's configuration and its parameters per stage: the
    shipped weights', or a preset's, or a weights file's.

    \b
    Examples:
      stvsr info
      stvsr info --preset paper
      stvsr info --preset zsm
      stvsr info --weights my-run/best.safetensors
      stvsr info --weights xiang2020zooming.pth
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .config import preset as preset_config
    from .networks import build_network
    from .weights import default_weights_path, load_model, weights_metadata

    if preset is not None and weights is not None:
        raise StvsrError("give one of --preset or --weights, not both")
    if preset is None and weights is None:
        weights = default_weights_path()
    model = build_network(preset_config(preset)) if preset else load_model(weights)

    console = Console()
    if weights is not None:
        # The file name as a heading, not a table title: a title wraps at the
        # table's width, which split long names mid-word.
        console.print(Text.assemble(("Weights file ", "bold"), str(weights)), soft_wrap=True)
        metadata = weights_metadata(weights)
        about = Table(show_header=False)
        for key in ("preset", "trained", "stvsr_version", "description"):
            if metadata.get(key):
                about.add_row(key, metadata[key])
        if about.row_count:
            console.print(about)
    title = f"{model.config.title} configuration{f' (preset {preset})' if preset else ''}"
    config = Table(title=title, show_header=False, min_width=len(title))  # as wide as its title: no wrapping
    for name, value in model.config.to_dict().items():
        config.add_row(name, str(value))
    console.print(config)
    counts = Table(title="Parameters")
    counts.add_column("stage")
    counts.add_column("parameters", justify="right")
    for stage, count in model.parameter_counts().items():
        counts.add_row(stage, f"{count:,}")
    counts.add_row("total", f"{model.num_parameters():,} ({model.num_parameters() / 1e6:.2f} M)", style="bold")
    console.print(counts)


def _network_options(function):
    """The options of every command that runs the network: weights, device,
    precision, tiles and batch, the same for `upscale` and `eval`."""
    options = [
        click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                     help="Weights file to use. [default: the shipped weights]"),
        click.option("--device", default="auto", show_default=True,
                     help="auto (the GPU when there is one), cpu, cuda or cuda:N."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
                     show_default=True, help="auto: bf16/fp16 on a GPU; on the CPU bf16 where it has native bf16 "
                     "(AVX512-BF16, AMX), else fp32."),
        click.option("--self-ensemble", is_flag=True,
                     help="Run each window 8 times, rotated and flipped, and average: a little more detail "
                     "(+0.05 to 0.12 dB PSNR-Y on the validation sets), 8x the time."),
        click.option("--tile", type=click.IntRange(min=0), default=DEFAULT_TILE, show_default=True,
                     help="Run frames larger than this many LR pixels as overlapping tiles; 0 runs whole frames."),
        click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Windows (or tiles) per forward pass."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT...")
@click.argument("output")  # a str: a trailing "/" asks for a frame directory
@_network_options
@click.option("--scene-threshold", type=click.FloatRange(0, 1), default=DEFAULT_SCENE_THRESHOLD, show_default=True,
              help="Luma-histogram change that counts as a scene cut; 0 turns detection off.")
@click.option("--codec", help="ffmpeg video encoder, e.g. libx264, libx265, libsvtav1 (`stvsr encoders` lists them).  "
                              "[default: by OUTPUT's extension: libx264; libvpx-vp9 for .webm, gif for .gif]")
@click.option("--crf", type=int, help="Constant rate factor: lower is better quality. [default: 18 for codecs that take it]")
@click.option("--preset", "encoder_preset", help="Encoder speed preset, e.g. medium, slow.")
@click.option("--pix-fmt", help="Output pixel format.  [default: yuv420p (yuv420p10le for 10-bit input) where the "
                                "encoder takes it, a palette per frame for .gif]")
@click.option("--encoder-opt", "encoder_opts", multiple=True, metavar="KEY=VALUE",
              help="Pass -KEY VALUE to the video encoder (repeatable), e.g. --encoder-opt tune=film --encoder-opt g=48.")
@click.option("--no-audio", is_flag=True, help="Drop the audio and subtitle streams.")
@click.option("--start", metavar="TIME", help="Start this far into INPUT, as ffmpeg's -ss: seconds (90, 1.5) or "
                                               "[HH:]MM:SS[.ms]. The frames are the whole run's frames.")
@click.option("--duration", metavar="TIME", help="Upscale this much of INPUT, as ffmpeg's -t. [default: to the end]")
@click.option("--end", metavar="TIME", help="Stop at this time of INPUT, as ffmpeg's -to (instead of --duration).")
@click.option("--segment", type=float, default=DEFAULT_SEGMENT_SECONDS, show_default=True, metavar="SECONDS",
              help="Work in segments of this many seconds of INPUT: what an interruption can cost, and what "
                   "several processes share out.")
@click.option("--resume", is_flag=True, help="Continue the unfinished run into OUTPUT from its last finished "
                                             "segment; the other options must be the same as then.")
@click.option("--format", "format_", metavar="EXT",
              help="For several inputs: write every output as this container (mp4, mkv...). [default: each input's]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write each input's result (frames, fps, seconds, status, error) to this JSON file.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary; warnings and errors still show.")
def upscale(inputs: tuple[Path, ...], output: str, weights: Path | None, device: str, precision: str,
            self_ensemble: bool, tile: int, batch: int,
            scene_threshold: float, codec: str | None, crf: int | None, encoder_preset: str | None,
            pix_fmt: str | None, encoder_opts: tuple[str, ...], no_audio: bool, start: str | None,
            duration: str | None, end: str | None, segment: float, resume: bool, format_: str | None,
            json_path: Path | None, overwrite: bool, quiet: bool) -> None:
    """Upscale INPUT 4x in width and height and 2x in frame rate into OUTPUT.

    OUTPUT is a video file or a directory, which receives numbered PNG
    frames. A video's extension picks the container and what goes in it:
    H.264 and the source's audio and subtitles for .mp4, .mkv, .mov and .ts,
    VP9 and Opus for .webm, a GIF without sound for .gif. OUTPUT appears
    only when the run succeeds; until then the finished segments wait in a
    hidden folder beside it, and a stopped run continues with --resume.

    Several INPUTs, or folders of videos, go into OUTPUT, an existing
    folder, each as OUTPUT/<name><ext>; outputs already there are skipped,
    and a failure does not stop the others. Under torchrun the segments
    (or the inputs) are shared out between the processes.

    \b
    Examples:
      stvsr upscale samples/bbb_128x72.mp4 bbb_x4.mp4
      stvsr upscale in.mkv out.mkv --codec libx265 --crf 20 --device cuda
      stvsr upscale in.mp4 preview.mp4 --start 1:30 --duration 5
      stvsr upscale film.mkv film_x4.mkv --resume
      stvsr upscale clips/ more.mov upscaled/ --format mkv --json results.json
      torchrun --nproc_per_node 4 -m stvsr_cli upscale film.mkv film_x4.mkv
      stvsr upscale in.mp4 frames/
    """
    from rich.console import Console

    from .encode import EncodeOptions
    from .progress import FrameProgress
    from .segments import parse_time
    from .upscale import UpscaleOptions, upscale_video

    encode = {"codec": codec, "preset": encoder_preset, "pix_fmt": pix_fmt, "audio": not no_audio,
              "extra": tuple(_key_value(option) for option in encoder_opts)}
    if crf is not None:
        encode["crf"] = crf
    options = UpscaleOptions(
        weights=weights,
        device=device,
        precision=precision,
        self_ensemble=self_ensemble,
        tile=tile,
        batch=batch,
        scene_threshold=scene_threshold,
        encode=EncodeOptions(**encode),
        overwrite=overwrite,
        start=parse_time(start, "--start") if start else 0.0,
        duration=parse_time(duration, "--duration") if duration else None,
        end=parse_time(end, "--end") if end else None,
        segment=segment,
        resume=resume,
    )
    from .batch import BatchItem, write_json
    from .distributed import finish, from_environment

    ranks = from_environment()
    try:
        if len(inputs) > 1 or inputs[0].is_dir():
            _upscale_batch(list(inputs), Path(output), options, format_, json_path, quiet, ranks)
            return
        if format_:
            raise StvsrError("--format is for several inputs; for one, OUTPUT's extension picks the container")
        console = Console(stderr=True, quiet=quiet or not ranks.leader)
        try:
            with _warnings_to(Console(stderr=True)), FrameProgress(console) as progress:
                result = upscale_video(inputs[0], output, options, progress=progress.update, ranks=ranks)
        except StvsrError as error:
            if json_path is not None and ranks.leader:
                write_json([BatchItem(str(inputs[0]), output, "failed", error=str(error))], json_path)
            raise
        if json_path is not None and ranks.leader:
            write_json([BatchItem.from_result(inputs[0], result)], json_path)
    finally:
        finish(ranks)
    if not quiet and ranks.leader:
        width, height = result.output_size
        cuts = f"; {result.scene_cuts} scene cut{'s' * (result.scene_cuts != 1)}" if result.scene_cuts else ""
        console.print(
            f"Wrote {output}: {result.output_frames} frames of {width}x{height} at {float(result.output_fps):.3g} fps "
            f"from {result.input_frames} at {float(result.input_fps):.3g} fps, in {result.seconds:.1f} s "
            f"({result.output_frames / result.seconds:.2f} frames a second){cuts}"
            + (f"; {result.resumed} of {result.segments} segments were done before --resume" if result.resumed else "")
            + ".",
            highlight=False,
            soft_wrap=True,
        )


def _upscale_batch(paths: list[Path], folder: Path, options, format_: str | None, json_path: Path | None,
                   quiet: bool, ranks) -> None:
    """Several inputs into a folder: a progress bar each, a summary table,
    and a non-zero exit when any input failed."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .batch import collect_inputs, upscale_batch, write_json
    from .progress import FrameProgress

    console = Console(stderr=True, quiet=quiet or not ranks.leader)
    inputs = collect_inputs(paths)
    bars: list = []

    def progress(input: Path):
        if bars:
            bars.pop().__exit__(None, None, None)
        console.print(f"{input}", highlight=False, soft_wrap=True)
        bar = FrameProgress(console)
        bars.append(bar)
        return bar.__enter__().update

    with _warnings_to(Console(stderr=True)):
        try:
            items = upscale_batch(inputs, folder, options, format=format_, ranks=ranks, progress=progress)
        finally:
            if bars:
                bars.pop().__exit__(None, None, None)
    if not ranks.leader:
        return
    if json_path is not None:
        write_json(items, json_path)
    if not quiet:
        # The errors go below the table, whole: in a column they wrap into a tall, narrow block.
        table = Table(box=box.SIMPLE_HEAD)
        for column in ("input", "status", "frames", "fps", "seconds"):
            table.add_column(column, justify="right" if column in ("frames", "fps", "seconds") else "left",
                             overflow="fold")
        for item in items:
            status = "skipped (exists)" if item.status == "skipped" else item.status
            table.add_row(item.input, status, "" if item.output_frames is None else str(item.output_frames),
                          "" if item.output_fps is None else f"{item.output_fps:.3g}",
                          "" if item.seconds is None else f"{item.seconds:.1f}")
        out = Console()
        out.print(table)
        for item in items:
            if item.status == "failed":
                out.print(f"{item.input}: {item.error}", highlight=False, soft_wrap=True)
    failed = [item for item in items if item.status == "failed"]
    if failed:
        raise StvsrError(f"{len(failed)} of {len(items)} inputs failed; the first: {failed[0].input}: {failed[0].error}")


def _key_value(option: str) -> tuple[str, str]:
    key, equals, value = option.partition("=")
    key = key.strip().lstrip("-")
    if not equals or not key:
        raise StvsrError(f"--encoder-opt {option!r} is not KEY=VALUE; write e.g. --encoder-opt tune=film")
    return key, value


@main.command()
@click.argument("name", required=False)
def encoders(name: str | None) -> None:
    """List the video encoders of the ffmpeg that stvsr runs, for `upscale
    --codec`, and where that ffmpeg is (imageio-ffmpeg's, which need not be
    the `ffmpeg` on your PATH). With NAME, that encoder's own options, for
    `upscale --encoder-opt`.

    \b
    Example:
      stvsr encoders
      stvsr encoders libx264
      stvsr upscale in.mp4 out.mkv --codec libx265 --encoder-opt x265-params=aq-mode=3
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .encode import encoder_help_text, ffmpeg_exe, list_encoders

    if name is not None:
        click.echo(encoder_help_text(name))
        return
    table = Table(box=box.SIMPLE_HEAD, title="Video encoders (--codec)", title_justify="left")
    for column in ("encoder", "codec", "description"):
        table.add_column(column)
    for name, codec, description in list_encoders():
        table.add_row(name, codec, description)
    console = Console()
    console.print(table)
    console.print(f"ffmpeg: {ffmpeg_exe()}", highlight=False, soft_wrap=True)
    console.print("Hardware encoders (nvenc, qsv, vaapi, amf) need their GPU and driver; stvsr tries the one you "
                  "pick on a frame before it starts.", highlight=False)


@main.command("eval")
@click.argument("data", type=click.Path(path_type=Path))
@_network_options
@click.option("--list", "lists", multiple=True, metavar="FILE",
              help="Vimeo-90K list file in DATA to score; repeat for several (fast, medium, slow). "
                   "[default: sep_testlist.txt]")
@click.option("--baselines", is_flag=True,
              help="Add rows without a network: bicubic x4 with in-between frames blended, repeated, "
                   "interpolated by ffmpeg's minterpolate (mci) or flow-warped.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every number, per frame too, to this JSON file.")
@click.option("--save", type=click.Path(file_okay=False, path_type=Path),
              help="Write the model's predicted frames as SAVE/<clip>/00000.png ...")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of PSNR-Y per frame, per clip, model against baselines.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or table; warnings and errors still show.")
def evaluate_command(data: Path, weights: Path | None, device: str, precision: str, self_ensemble: bool,
                     tile: int, batch: int,
                     lists: tuple[str, ...], baselines: bool, json_path: Path | None, save: Path | None,
                     plot: Path | None, quiet: bool) -> None:
    """Score the network against ground truth: PSNR and SSIM on Y and RGB.

    DATA is a folder of clips in the Vid4 layout (DATA/<clip>/GT/*.png, with
    DATA/<clip>/LR/*.png used when present, otherwise the inputs are made
    from GT), a folder of clip folders holding their frames directly, a
    Vimeo-90K septuplet root, or a video file (its frames are the GT; the
    summary then says what a full upscale of it would cost here). The inputs
    are GT frames 1, 3, 5, ... (counting from 1) shrunk 4x; every GT frame up
    to the last input is predicted
    through the same windows and stitching as `stvsr upscale`, and scored: all
    of a clip of 2n+1 GT frames, the first 2n-1 of a clip of 2n (its last
    frame has no input after it); clips of fewer than 3 frames are skipped.
    The table shows the mean per clip and over clips, for all frames and for
    the reconstructed (input time) and interpolated (in-between) ones.

    \b
    Examples:
      stvsr eval data/vid4 --baselines
      stvsr eval my_clip.mp4 --baselines
      stvsr eval data/vid4 --weights run/best.safetensors --json vid4.json --plot vid4.png --save out/
      stvsr eval vimeo_septuplet --list fast_testset.txt --list slow_testset.txt --device cuda
    """
    from rich.console import Console

    from .evaluate import MODEL, EvalOptions, evaluate, plot_psnr, write_json
    from .files import check_output_file
    from .progress import FrameProgress

    for path, option in ((json_path, "--json"), (plot, "--plot")):
        if path is not None:
            check_output_file(path, option)
    options = EvalOptions(weights=weights, device=device, precision=precision, self_ensemble=self_ensemble,
                          tile=tile, batch=batch,
                          lists=lists, baselines=baselines, save=save)
    console = Console(stderr=True, quiet=quiet)
    with _warnings_to(Console(stderr=True)), FrameProgress(console, "evaluating") as progress:
        report = evaluate(data, options, progress=progress.update)
    if json_path is not None:
        write_json(report, json_path)
    if plot is not None:
        plot_psnr(report, plot)
    if not quiet:
        out = Console()
        out.print(_report_table(report))
        frames = sum(len(clip.frames[MODEL]) for clip in report.clips)
        written = [f"{option} {path}" for option, path in (("--json", json_path), ("--plot", plot), ("--save", save))
                   if path is not None]
        out.print(f"Scored {frames} frames of {len(report.clips)} clip{'s' * (len(report.clips) != 1)} "
                  f"in {report.seconds:.1f} s" + (f"; wrote {', '.join(written)}" if written else "") + ".",
                  highlight=False, soft_wrap=True)
        for clip in report.clips:
            if clip.video is not None:
                (width, height), frames = clip.video_size, clip.gt_frames
                out.print(f"A full upscale of {Path(clip.video).name} ({width}x{height} to {4 * width}x{4 * height}, "
                          f"{frames} frames to {2 * frames}) would take about {_duration(clip.upscale_estimate())} "
                          f"on {report.device} with these weights and options (the network's time here, scaled "
                          "by area; decoding and encoding not counted).", highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 days 4 h': as precise as an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h"


_TABLE_CLIPS = 20  # more clips than this (Vimeo-90K) show only the means; --json has them all


def _report_table(report):
    """Clips x methods; PSNR and SSIM on Y over all scored frames, then over
    the reconstructed and the interpolated ones alone, then on RGB. Each clip
    is a heading row above its methods, so the table fits 80 columns."""
    from rich import box
    from rich.table import Table

    from .evaluate import BLEND, FLOW, MCI, MODEL, REPEAT

    table = Table(title="PSNR (dB) and SSIM: the mean per clip, then over clips", box=box.SIMPLE_HEAD,
                  padding=0, pad_edge=False)  # the box draws a space between columns
    table.add_column("clip / method", no_wrap=True)
    for name in ("PSNR-Y", "recon", "interp", "SSIM-Y", "recon", "interp", "PSNR-RGB", "SSIM-RGB"):
        table.add_column(name, justify="right", no_wrap=True)

    def add(label: str, scores_of, style: str | None = None) -> None:
        table.add_row(label, style=style or "bold")
        for number, row in enumerate(report.rows):
            every, recon, interp = (scores_of(row, kind) for kind in ("all", "reconstructed", "interpolated"))
            table.add_row(
                f"  {row}",
                *(f"{s.psnr_y:.2f}" for s in (every, recon, interp)),
                *(f"{s.ssim_y:.4f}" for s in (every, recon, interp)),
                f"{every.psnr_rgb:.2f}", f"{every.ssim_rgb:.4f}",
                style=style, end_section=number == len(report.rows) - 1,
            )

    if len(report.clips) <= _TABLE_CLIPS:
        for clip in report.clips:
            add(f"{clip.name} ({len(clip.frames[MODEL])}/{clip.gt_frames})", clip.scores)
    groups = [group for group in report.groups if group]
    if len(groups) > 1:
        for group in groups:
            count = sum(clip.group == group for clip in report.clips)
            add(f"{group} ({count} clips)", lambda row, kind, group=group: report.mean(row, kind, group))
    if len(report.clips) > 1:  # the mean of one clip would repeat its rows
        add(f"mean of {len(report.clips)} clips", report.mean, style="bold")
    network = "the network" + (", averaged over 8 rotations and flips (--self-ensemble)" if report.self_ensemble else "")
    described = {MODEL: network, BLEND: "bicubic x4, in-between frames averaged",
                 REPEAT: "bicubic x4, in-between frames repeated",
                 MCI: "bicubic x4, in-between frames by ffmpeg's minterpolate",
                 FLOW: "bicubic x4, in-between frames flow-warped (DIS optical flow)"}
    table.caption = (
        "clip (scored/GT frames); recon: reconstructed frames (input times), interp: interpolated frames "
        "(between inputs); " + "; ".join(f"{row}: {described[row]}" for row in report.rows)
    )
    return table


@contextmanager
def _warnings_to(console):
    """Print the library's warnings as `stvsr: warning: ...` lines (above a
    live progress bar, when there is one)."""

    class ConsoleHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console.print(f"stvsr: warning: {record.getMessage()}", markup=False, highlight=False, soft_wrap=True)

    logger = logging.getLogger("stvsr")
    handler = ConsoleHandler(logging.WARNING)
    logger.addHandler(handler)
    logger.propagate, propagate = False, logger.propagate
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@main.command()
@click.argument("data", nargs=-1)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--preset", type=click.Choice(list(PRESETS)),
              help="Network of a new run: a MEGAN size, or zsm for Zooming Slow-Mo.  [default: paper]")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), help="Start from these weights.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint, with the DATA "
                                            "and options it started with (give only what should change, such as --workers).")
@click.option("--motion-prior", type=click.Choice(["flow", "none"]),
              help="Give the network (the preset's, or --init's) an optical-flow motion prior, or take it away.  "
                   "[default: as the preset or --init has it]")
@_train_option("--iters", type=int, help="Training steps.")
@_train_option("--batch", type=int, help="Samples a step, over all processes.")
@_train_option("--lr", type=float, help="Learning rate at the start.")
@_train_option("--lr-min", type=float, help="Learning rate at the end (cosine).")
@_train_option("--betas", type=(float, float), help="Adam's betas.")
@_train_option("--eps", type=float, help="Charbonnier loss epsilon.")
@_train_option("--interp-weight", type=float,
               help="Loss weight of each in-between frame against a frame at an input's time (1: the paper's mean).")
@_train_option("--crop", type=int, help="LR crop side; HR crops are 4x.")
@_train_option("--seed", type=int, help="Seed of the initial weights and the samples.")
@click.option("--val", multiple=True, help="Validation data (any layout DATA takes); repeatable.")
@_train_option("--val-every", type=int, help="Steps between validations.")
@_train_option("--val-windows", type=int, help="Validation septuplets (7 HR frames each) at most.")
@_train_option("--val-size", type=int, help="HR centre crop of a validation septuplet.")
@_train_option("--save-every", type=int, help="Steps between checkpoints.")
@_train_option("--log-every", type=int, help="Steps between lines of log.jsonl.")
@_train_option("--device", help="auto, cpu, cuda or cuda:N.")
@_train_option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
               help="auto: bf16 or fp16 mixed precision on a GPU, fp32 on the CPU (bf16 there only when asked).")
@click.option("--workers", type=int, help="Data loading processes.  [default: CPU cores, at most 8]")
@_train_option("--max-bad-steps", type=int, help="Stop after this many non-finite steps in a row.")
@click.option("--stop-after", metavar="DURATION",
              help="Stop cleanly once this much time has passed (45m, 8h, 1h30m), writing the checkpoint and "
                   "last.safetensors; --resume continues the run.")
@click.pass_context
def train(ctx: click.Context, data: tuple[str, ...], out: Path, workers: int | None, stop_after: str | None,
          **options) -> None:
    """Train MEGAN (or Zooming Slow-Mo) on videos, frame folders, photos or Vimeo-90K.

    Each DATA is detected by its layout: a video file or a folder of videos;
    a folder of clip folders (numbered frames in each, as Vid4 and REDS); a
    folder of photos (given synthetic camera motion); a Vimeo-90K septuplet
    root. KIND:PATH forces a layout (vimeo:, clips:, videos:, stills:).

    The defaults are the paper's recipe for a GPU: the paper preset,
    20,000 steps of batch 16, Charbonnier loss, Adam, cosine learning rate
    from 1e-4 to 1e-7, LR crops of 32; on a CPU that takes days (the run
    says how long after its first steps), so use --preset small and fewer
    --iters there. The run folder gets checkpoint.pt, last.safetensors,
    best.safetensors (with --val), log.jsonl, progress.png and
    options.json. Under torchrun the same command trains on every GPU with
    DistributedDataParallel.

    \b
    Example:
      stvsr train my-clips/ --out runs/try --preset tiny --iters 50
      stvsr train my-videos/ --val vid4 --out runs/cpu --preset small --iters 2000 --batch 4
      stvsr train vimeo_septuplet --val vid4 --out runs/paper
      stvsr train --out runs/paper --resume --stop-after 8h
      stvsr train vimeo_septuplet --val vid4 --out runs/zsm-ft --init xiang2020zooming.pth --lr 1e-5
      torchrun --nproc_per_node 4 -m stvsr_cli train vimeo_septuplet --out runs/paper
    """
    from rich.console import Console

    from .options import parse_duration
    from .train import TrainOptions, train as run_training

    extra = {} if workers is None else {"workers": workers}
    if stop_after is not None:
        extra["stop_after"] = parse_duration(stop_after)
    if options["resume"]:  # what the run started with, under what this command line gives
        del options["resume"]
        given = {name: value for name, value in options.items()
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
        train_options = TrainOptions.resuming(out, data=data, **given, **extra)
    else:
        train_options = TrainOptions(data=data, out=out, **options, **extra)
    with _warnings_to(Console(stderr=True)):
        result = run_training(train_options)
    loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
    best = "" if result.best_psnr is None else f", best validation PSNR-Y {result.best_psnr:.2f} dB"
    steps = (f"stopped at step {result.step} of {train_options.iters} (--stop-after; --resume continues)"
             if result.stopped else f"trained {result.step} steps")
    click.echo(f"{steps}, last loss {loss}{best}; weights: {result.run_dir / 'last.safetensors'}")


@main.command()
@click.argument("source", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("destination", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def convert(source: Path, destination: Path, overwrite: bool) -> None:
    """Rewrite weights stvsr can load as a stvsr .safetensors file.

    IN is a stvsr weights file, a training checkpoint (checkpoint.pt) or
    Zooming Slow-Mo's released weights (xiang2020zooming.pth). OUT, named
    *.safetensors, carries the network's configuration and nothing but
    tensors: safe to share, loaded by --weights without unpickling anything.
    The tensors keep their values and precision.

    \b
    Examples:
      stvsr convert xiang2020zooming.pth zsm.safetensors
      stvsr convert runs/x/checkpoint.pt x.safetensors
    """
    from .config import preset_name
    from .weights import convert_weights

    model = convert_weights(source, destination, overwrite=overwrite)
    click.echo(
        f"wrote {destination}: {model.config.title}, {preset_name(model.config) or 'custom'} preset, "
        f"{model.num_parameters():,} parameters"
    )


@main.command()
@click.option("--device", default=_BENCH["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--preset",
    "presets",
    type=click.Choice(list(PRESETS)),
    multiple=True,
    help=f"Network size to time; repeat for several.  [default: {' and '.join(_BENCH['presets'])}]",
)
@click.option("--precision", "precisions", multiple=True,
              help=f"auto, fp32, bf16 or fp16; repeat to compare in one run.  "
                   f"[default: {' and '.join(_BENCH['precisions'])}]")
@click.option("--motion-prior", "motion_priors", type=click.Choice(["none", "flow"]), multiple=True,
              help="Time the presets without or with the optical-flow motion prior; repeat both to see its cost.  "
                   "[default: as each preset has it]")
@click.option("--size", "sizes", multiple=True,
              help="Workload: vid4 (720x576 output), 1080p, or an output size WIDTHxHEIGHT; repeatable.  "
                   "[default: vid4 and 1080p on a GPU, vid4 on the CPU]")
@click.option("--end-to-end/--model-only", default=_BENCH["end_to_end"], show_default=True,
              help="Also time the whole upscale path (decode, network, encode, audio) on a generated clip.")
@click.option("--frames", "clip_frames", type=int,
              help="LR frames of the end-to-end clip.  [default: 96 on a GPU, 8 on the CPU]")
@click.option("--tile", type=click.IntRange(min=0), default=_BENCH["tile"], show_default=True,
              help="LR tile side, as upscale's (0: whole frames).")
@click.option("--runs", default=_BENCH["runs"], show_default=True,
              help="Timed runs of each measurement (the median is reported).")
@click.option("--warmup", default=_BENCH["warmup"], show_default=True,
              help="Untimed runs first (the first counts the FLOPs).")
@click.option("--threads", type=int, help="CPU threads for PyTorch.  [default: PyTorch's, one per core]")
@click.option("--deform/--no-deform", default=_BENCH["deform"], show_default=True,
              help="On the CPU, also time torchvision's deformable convolution against stvsr's.")
@click.option("--peak-tflops", type=float, help="The device's peak TFLOP/s, for GPUs stvsr does not know.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every measurement to this JSON file.")
def bench(sizes: tuple[str, ...], json_path: Path | None, **options) -> None:
    """Time the network with random weights, alone and inside the whole
    upscale path: output frames per second, milliseconds per frame, peak
    memory, and achieved FLOP/s against the device's peak and against a
    plain 64-channel 3x3 convolution timed in the same run (on the CPU
    channels-last, in fp32 and in bf16).

    \b
    Example:
      stvsr bench                                   # the standard workloads on this machine
      stvsr bench --device cuda --precision fp32 --precision bf16 --json bench.json
      stvsr bench --device cpu --preset small --size 320x180 --model-only
      stvsr bench --device cpu --precision fp32 --precision auto   # bf16 where the CPU has it
      stvsr bench --device cpu --preset small --motion-prior none --motion-prior flow   # the prior's cost
    """
    from rich.console import Console

    from .bench import Workload, run_bench
    from .files import check_output_file, write_atomically

    if json_path is not None:
        check_output_file(json_path, "--json")  # before minutes of timing, not after
    for name in ("presets", "precisions", "motion_priors"):  # an option not given: the library's default
        options[name] = options[name] or _BENCH[name]
    report = run_bench(BenchOptions(workloads=[Workload.parse(size) for size in sizes], **options))
    console = Console()
    _print_bench(report, console)
    if json_path is not None:
        text = json.dumps(report.to_dict(), indent=2) + "\n"
        write_atomically(json_path, lambda temporary: temporary.write_text(text))
        console.print(f"wrote {json_path}")


def _print_bench(report, console) -> None:
    """The tables of a `BenchReport`: the deformable convolutions (when timed), the network alone,
    and the whole upscale path (when timed)."""
    from rich import box
    from rich.table import Table

    import statistics

    console.print(f"{report.device}, {report.threads} PyTorch threads, torch {report.torch_version}")
    if report.deform is not None:
        d = report.deform
        table = Table(title=f"Deformable convolution, input {'x'.join(map(str, d.shape))}, {d.groups} groups")
        for column in ("", "ms", "GFLOP/s"):
            table.add_column(column, justify="right")
        for name, timing in (("torchvision", d.torchvision), ("stvsr", d.stvsr), ("plain 3x3 conv", d.conv)):
            table.add_row(name, f"{timing.median_seconds * 1e3:.1f}", f"{timing.gflops:.1f}")
        console.print(table)

    def mib(size: int) -> str:
        return f"{size / 2**20:,.0f}"

    def short(precision: str) -> str:
        return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(precision, precision)

    def name(workload) -> str:
        return workload.name or f"{workload.width}x{workload.height}"

    def network(result) -> str:
        return result.preset + (" +flow" if result.motion_prior else "")

    memory = "RSS" if report.device.startswith("CPU") else "GPU memory"
    table = Table(title=f"Network alone (a window adds 4 output frames); prior: the motion prior's share of a "
                        f"window's time; MiB: peak {memory}", box=box.SIMPLE_HEAD)
    known_peak = any(m.peak_fraction is not None for m in report.models)  # never on a CPU
    any_prior = any(m.prior_fraction is not None for m in report.models)
    # one column per precision of the plain convolution timed alongside: fp32 and bf16 on the CPU
    references = list(dict.fromkeys(precision for m in report.models for precision in m.references))
    columns = ("preset", "dtype", "workload", "ms/frame", "fps", "TFLOP/s", *(["of peak"] if known_peak else []),
               *(f"of {short(precision)} conv" for precision in references), *(["prior"] if any_prior else []), "MiB")
    for column in columns:
        table.add_column(column, justify="right")
    for m in report.models:
        peak = ["-" if m.peak_fraction is None else f"{m.peak_fraction:.1%}"] if known_peak else []
        fractions = [f"{m.conv_fraction_of(p):.0%}" if p in m.references else "-" for p in references]
        prior = ["-" if m.prior_fraction is None else f"{m.prior_fraction:.1%}"] if any_prior else []
        table.add_row(
            network(m), short(m.precision), name(m.workload),
            f"{m.seconds_per_frame * 1e3:,.1f}", f"{m.fps:.2f}", f"{m.window.gflops / 1e3:.3f}", *peak,
            *fractions, *prior, mib(m.peak_memory),
        )  # fmt: skip
    console.print(table)
    speeds = {p: statistics.median(m.references[p].gflops for m in report.models if p in m.references)
              for p in references}
    layout = "channels-last" if report.device.startswith("CPU") else "NCHW"
    console.print("plain 64-channel 3x3 convolution (" + layout + "), median over the rows: "
                  + ", ".join(f"{short(p)} {gflops:,.1f} GFLOP/s" for p, gflops in speeds.items()))
    if any(p is not None for p in report.pipelines):
        table = Table(title=f"Whole upscale path (decode, network, encode, audio); MiB: peak {memory}",
                      box=box.SIMPLE_HEAD)
        for column in ("preset", "dtype", "workload", "frames", "ms/frame", "fps", "of network", "MiB"):
            table.add_column(column, justify="right")
        for m, p in zip(report.models, report.pipelines):
            if p is not None:
                table.add_row(
                    network(p), short(p.precision), name(p.workload),
                    str(p.output_frames), f"{p.seconds_per_frame * 1e3:,.1f}", f"{p.fps:.2f}",
                    f"{p.efficiency(m):.0%}", mib(p.peak_memory),
                )  # fmt: skip
        console.print(table)
