"""The `stvsr` command: a thin layer over the library.

Each command parses its options, calls one library function and reports.
Errors a user can fix (`StvsrError`) are printed as one line with a non-zero
exit status; `stvsr --debug ...` (or STVSR_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

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
    # first line only: errors re-raised from DataLoader workers carry a whole traceback
    message = (str(error).strip().splitlines() or [""])[0]
    return (
        f"stvsr: unexpected {type(error).__name__}: {message}. "
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
@click.argument("data", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--preset", type=click.Choice(list(PRESETS)), help="Network size of a new run.  [default: paper]")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), help="Start from these weights.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--iters", type=int, default=20_000, show_default=True, help="Training steps.")
@click.option("--batch", type=int, default=16, show_default=True, help="Samples a step, over all processes.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Learning rate at the start.")
@click.option("--lr-min", type=float, default=1e-7, show_default=True, help="Learning rate at the end (cosine).")
@click.option("--betas", type=(float, float), default=(0.9, 0.999), show_default=True, help="Adam's betas.")
@click.option("--eps", type=float, default=1e-3, show_default=True, help="Charbonnier loss epsilon.")
@click.option("--crop", type=int, default=32, show_default=True, help="LR crop side; HR crops are 4x.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights and the samples.")
@click.option("--val", multiple=True, help="Validation data (any layout DATA takes); repeatable.")
@click.option("--val-every", type=int, default=1000, show_default=True, help="Steps between validations.")
@click.option("--val-windows", type=int, default=32, show_default=True, help="Validation windows at most.")
@click.option("--val-size", type=int, default=256, show_default=True, help="HR centre crop of a validation window.")
@click.option("--save-every", type=int, default=1000, show_default=True, help="Steps between checkpoints.")
@click.option("--log-every", type=int, default=10, show_default=True, help="Steps between lines of log.jsonl.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: bf16 or fp16 mixed precision on a GPU, fp32 on the CPU.")
@click.option("--workers", type=int, help="Data loading processes.  [default: CPU cores, at most 8]")
@click.option("--max-bad-steps", type=int, default=10, show_default=True,
              help="Stop after this many non-finite steps in a row.")
def train(data: tuple[str, ...], out: Path, workers: int | None, **options) -> None:
    """Train MEGAN on videos, frame folders, photos or Vimeo-90K.

    Each DATA is detected by its layout: a video file or a folder of videos;
    a folder of clip folders (numbered frames in each, as Vid4 and REDS); a
    folder of photos (given synthetic camera motion); a Vimeo-90K septuplet
    root. KIND:PATH forces a layout (vimeo:, clips:, videos:, stills:).

    The defaults are the paper's recipe: Charbonnier loss, Adam, cosine
    learning rate from 1e-4 to 1e-7, batch 16, LR crops of 32. The run
    folder gets checkpoint.pt, last.safetensors, best.safetensors (with
    --val), log.jsonl, progress.png and options.json. Under torchrun the
    same command trains on every GPU with DistributedDataParallel.

    \b
    Example:
      stvsr train ../shared/data/train/clips --out runs/x --preset tiny --iters 50
      stvsr train vimeo_septuplet --val vid4 --out runs/paper
      stvsr train vimeo_septuplet --val vid4 --out runs/paper --resume
      torchrun --nproc_per_node 4 -m stvsr_cli train vimeo_septuplet --out runs/paper
    """
    from .train import TrainOptions, train as run_training

    extra = {} if workers is None else {"workers": workers}
    result = run_training(TrainOptions(data=data, out=out, **options, **extra))
    loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
    best = "" if result.best_psnr is None else f", best validation PSNR-Y {result.best_psnr:.2f} dB"
    click.echo(f"trained {result.step} steps, last loss {loss}{best}; weights: {result.run_dir / 'last.safetensors'}")
