"""The README stays true: its Python one-liner runs and prints what it says."""

import re
import subprocess
import sys
from pathlib import Path

from stvsr_cli import MEGAN, PRESETS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_parameter_one_liner_prints_what_the_readme_says():
    command = re.search(r'^python -c "(.+)"$', README, re.MULTILINE).group(1)
    claimed = re.search(r"prints `(.+?)`", README).group(1)
    result = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == claimed


def test_readme_parameter_table_matches_the_network():
    counts = MEGAN(PRESETS["paper"]).parameter_counts()
    table = re.findall(r"^\| [^|]+ \| [^|]+ \| \**([\d,]+)\** \|$", README, re.MULTILINE)
    assert [int(n.replace(",", "")) for n in table] == [*counts.values(), sum(counts.values())]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    example = re.search(r"```python\n(.+?)```", README, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["hr"].shape == (1, 7, 3, 180, 244)
    assert (tmp_path / "tiny.safetensors").is_file()
