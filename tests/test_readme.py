"""The README stays true: its Python one-liner runs and prints what it says."""

import re
import subprocess
import sys
from pathlib import Path

from stvsr_cli import MEGAN, PRESETS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_parameter_one_liner_prints_what_the_readme_says():
    command = re.search(r'^python -c "(.+)"$', README, re.MULTILINE).group(1)
    claimed = re.search(r"prints `(.+?)`", README).group(1)
    result = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == claimed


def test_readme_parameter_table_matches_the_network():
    counts = MEGAN(PRESETS["paper"]).parameter_counts()
    table = re.findall(r"^\| [^|]+ \| [^|]+ \| \**([\d,]+)\** \|$", README, re.MULTILINE)
    assert [int(n.replace(",", "")) for n in table] == [*counts.values(), sum(counts.values())]


def python_example(containing: str) -> str:
    return next(block for block in re.findall(r"```python\n(.+?)```", README, re.DOTALL) if containing in block)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    example = python_example("Upscaler(")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["hr"].shape == (1, 7, 3, 180, 244)
    assert (tmp_path / "tiny.safetensors").is_file()


def test_readme_main_job_runs_on_the_shipped_sample_and_gives_what_it_says(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from stvsr_cli.cli import main

    command = re.search(r"^stvsr upscale (samples/\S+) (\S+)$", README, re.MULTILINE)
    sample, output = command.groups()
    claimed = re.search(r"into (\d+) frames of (\d+x\d+) at (\d+) fps", README).groups()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["upscale", str(ROOT / sample), output, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{claimed[0]} frames of {claimed[1]} at {claimed[2]} fps" in result.output
    assert (tmp_path / output).is_file()


def test_readme_library_upscale_example_runs(tmp_path, monkeypatch):
    from videos import make_video

    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "in.mp4", frames=3)
    namespace: dict = {}
    exec(compile(python_example("upscale_video("), "README.md", "exec"), namespace)
    assert namespace["result"].output_frames == 6


def test_readme_eval_recipe_makes_a_vid4_folder_that_eval_scores_as_it_says(tmp_path, monkeypatch):
    import shutil

    from click.testing import CliRunner

    from stvsr_cli.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "samples").mkdir()
    shutil.copy(ROOT / "samples" / "bbb_128x72.mp4", tmp_path / "samples")
    exec(compile(python_example("av.open("), "README.md", "exec"), {})
    data, scored, total = re.search(r"then `stvsr eval (\S+) --baselines` scores (\d+) of its (\d+) frames", README).groups()
    assert len(list((tmp_path / data).glob("*/GT/*.png"))) == int(total)
    result = CliRunner().invoke(main, ["eval", data, "--baselines", "--device", "cpu"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"Scored {scored} frames of 1 clip" in result.output and "bicubic + blend" in result.output

    example = python_example("evaluate(").replace("data/vid4", data)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["report"].rows == ("model", "bicubic + blend", "bicubic + repeat", "bicubic + mci", "bicubic + flow")
