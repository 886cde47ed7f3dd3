"""What a training run shows and keeps: the progress bar, log.jsonl and the plot.

`log.jsonl` holds one JSON object a line: training records (`step`, `loss`,
`lr`, `it_per_s`, ...) every `--log-every` steps and validation records
(`step`, `val_psnr_y`, ...) at every validation. `progress.png` plots both
and is redrawn at each validation and at the end. On `--resume` the log is
cut back to the checkpoint's step, so it reads as if the run never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from .files import write_atomically


class RunLog:
    """Appends records to RUN_DIR/log.jsonl and keeps them for the plot."""

    def __init__(self, run_dir: Path, keep_until: int = 0) -> None:
        """Keep the records of steps up to `keep_until` (the checkpoint's step), drop later ones."""
        self.path = run_dir / "log.jsonl"
        self.plot_path = run_dir / "progress.png"
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        self.records = [record for record in map(json.loads, filter(None, lines)) if record["step"] <= keep_until]
        write_atomically(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records)))

    def write(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        """Training loss and validation PSNR-Y against the step, as progress.png."""
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r.get("loss") is not None]
        val = [r for r in self.records if "val_psnr_y" in r]
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, constrained_layout=True)
        top.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
        top.set_ylabel("training loss (Charbonnier)")
        if train and min(r["loss"] for r in train) > 0:
            top.set_yscale("log")
        top.grid(True, alpha=0.3)
        bottom.plot([r["step"] for r in val], [r["val_psnr_y"] for r in val], "o-", color="tab:orange")
        bottom.set_ylabel("validation PSNR-Y (dB)")
        bottom.set_xlabel("step")
        bottom.grid(True, alpha=0.3)
        if not val:
            bottom.text(0.5, 0.5, "no validation (--val)", ha="center", va="center", transform=bottom.transAxes)
        write_atomically(self.plot_path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
        plt.close(figure)


class _SpeedColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} it/s" if task.speed else "-- it/s", style="progress.data.speed")


def progress_bar(console: Console, enabled: bool) -> Progress:
    """Step, bar, loss, learning rate, iterations per second and ETA."""
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("lr {task.fields[lr]}"),
        _SpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )
