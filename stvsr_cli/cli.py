"""The `stvsr` command: a thin layer over the library.

Each command parses its options, calls one library function and reports.
Errors a user can fix (`StvsrError`) are printed as one line with a non-zero
exit status; `stvsr --debug ...` (or STVSR_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .config import PRESETS, MEGANConfig
from .errors import StvsrError
from .megan import MEGAN
from .weights import load_model


class _Group(click.Group):
    """Turns exceptions into one line on stderr and an exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (KeyboardInterrupt, Exception) as error:
            if _debug(ctx):
                raise
            click.echo(_one_line(error), err=True)
            sys.exit(130 if isinstance(error, KeyboardInterrupt) else 1)


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "stvsr: interrupted"
    if isinstance(error, StvsrError):
        return f"stvsr: error: {error}"
    return (
        f"stvsr: unexpected {type(error).__name__}: {error}. "
        "Run again with `stvsr --debug ...` for the traceback and report it."
    )


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("STVSR_DEBUG", "") not in ("", "0")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="stvsr")
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
def main(debug: bool) -> None:
    """Space-time video super-resolution: 4x the width and height and twice
    the frame rate, with the MEGAN network (You et al., WACV 2022).

    \b
    Example:
      stvsr info --preset paper
    """


@main.command()
@click.option("--preset", type=click.Choice(list(PRESETS)), help="Describe a fresh network of this preset.")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Describe the network stored in this weights file.",
)
def info(preset: str | None, weights: Path | None) -> None:
    """Show a network's configuration and its parameters per stage.

    \b
    Examples:
      stvsr info --preset paper
      stvsr info --weights my-run/best.safetensors
    """
    if (preset is None) == (weights is None):
        raise StvsrError("give exactly one of --preset or --weights, e.g. `stvsr info --preset paper`")
    model = MEGAN(MEGANConfig.preset(preset)) if preset else load_model(weights)
    source = f"preset {preset}" if preset else str(weights)

    console = Console()
    config = Table(title=f"MEGAN configuration ({source})", show_header=False)
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


@main.command()
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--preset",
    "presets",
    type=click.Choice(list(PRESETS)),
    multiple=True,
    help="Network size to time; repeat for several.  [default: paper and small]",
)
@click.option("--precision", default="auto", show_default=True, help="auto, fp32, bf16 or fp16.")
@click.option("--size", default="640x360", show_default=True, help="Output frame size, WIDTHxHEIGHT.")
@click.option("--runs", default=3, show_default=True, help="Timed windows per preset (the median is reported).")
@click.option("--warmup", default=1, show_default=True, help="Untimed windows first (the first counts the FLOPs).")
@click.option("--threads", type=int, help="CPU threads for PyTorch.  [default: PyTorch's, one per core]")
@click.option("--deform/--no-deform", default=True, show_default=True,
              help="On the CPU, also time torchvision's deformable convolution against stvsr's.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every measurement to this JSON file.")
def bench(
    device: str,
    presets: tuple[str, ...],
    precision: str,
    size: str,
    runs: int,
    warmup: int,
    threads: int | None,
    deform: bool,
    json_path: Path | None,
) -> None:
    """Time the network with random weights: seconds per output frame, and
    achieved GFLOP/s against a plain 64-channel 3x3 convolution timed in the
    same run on the same device.

    \b
    Example:
      stvsr bench --device cpu
      stvsr bench --device cpu --preset small --size 320x180 --json bench.json
    """
    from .bench import Workload, run_bench

    report = run_bench(
        list(presets) or ["paper", "small"],
        Workload.parse(size),
        device=device,
        precision=precision,
        runs=runs,
        warmup=warmup,
        threads=threads,
        deform=deform,
    )
    console = Console()
    console.print(f"{report.device}, {report.threads} PyTorch threads, torch {report.torch_version}")
    if report.deform is not None:
        d = report.deform
        table = Table(title=f"Deformable convolution, input {'x'.join(map(str, d.shape))}, {d.groups} groups")
        for column in ("", "ms", "GFLOP/s"):
            table.add_column(column, justify="right")
        for name, timing in (("torchvision", d.torchvision), ("stvsr", d.stvsr), ("plain 3x3 conv", d.conv)):
            table.add_row(name, f"{timing.median_seconds * 1e3:.1f}", f"{timing.gflops:.1f}")
        console.print(table)
    first = report.models[0]
    table = Table(title=f"Network, {first.precision}, {first.workload}: a window of 4 LR frames adds 4 output frames")
    for column in ("preset", "s / window", "s / frame", "GFLOP / window", "GFLOP/s", "conv GFLOP/s", "of conv"):
        table.add_column(column, justify="right")
    for m in report.models:
        table.add_row(
            m.preset, f"{m.window.median_seconds:.2f}", f"{m.seconds_per_frame:.3f}", f"{m.window.gflop:.0f}",
            f"{m.window.gflops:.1f}", f"{m.conv.gflops:.1f}", f"{m.conv_fraction:.0%}",
        )
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_path}")
