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
