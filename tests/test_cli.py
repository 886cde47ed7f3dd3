"""The command line: help, version, and one-line errors."""

import importlib.abc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from stvsr_cli import PRESETS, MEGAN, MEGANConfig, WeightsError, __version__, save_weights
from stvsr_cli.weights import weights_metadata
from stvsr_cli.cli import main


# Subprocesses import this checkout's stvsr_cli, whatever is installed.
ROOT_ON_PATH = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                            os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"stvsr, version {__version__}"


def test_every_command_has_help_with_an_example(runner):
    assert runner.invoke(main, ["--help"]).exit_code == 0
    for name, command in main.commands.items():
        assert command.help, f"{name} has no help text"
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, f"{name} --help shows no example"


def test_info_for_a_preset(runner):
    result = runner.invoke(main, ["info", "--preset", "paper"])
    assert result.exit_code == 0, result.output
    assert f"{MEGAN(PRESETS['paper']).num_parameters():,}" in result.output
    assert "convlstm" in result.output


def test_info_for_a_weights_file(runner, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_weights(MEGAN(PRESETS["tiny"]), path, description="made by a test")
    result = runner.invoke(main, ["info", "--weights", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{MEGAN(PRESETS['tiny']).num_parameters():,}" in result.output
    assert "tiny" in result.output and "made by a test" in result.output  # the file records its preset


def test_weights_of_other_sizes_record_a_custom_preset(tmp_path):
    path = tmp_path / "wide.safetensors"
    save_weights(MEGAN(MEGANConfig(**{**PRESETS["tiny"].to_dict(), "channels": 12})), path)
    assert weights_metadata(path)["preset"] == "custom"
    assert weights_metadata(tmp_path / "missing.safetensors") == {}


def test_bad_weights_file_gives_one_line_and_no_traceback(runner, tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"definitely not weights")
    result = runner.invoke(main, ["info", "--weights", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("stvsr: error:") and result.output.count("\n") == 1  # no blank line before it
    assert "not a stvsr weights file" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("save", ["zip", "legacy", "pickle"])
def test_a_pickle_named_safetensors_gets_the_same_clean_line(runner, tmp_path, save):
    """torch.load reads a `.safetensors` name as safetensors, whatever the content."""
    import pickle

    path = tmp_path / "weights.safetensors"
    if save == "pickle":
        path.write_bytes(pickle.dumps({"model": 1}))
    else:
        torch.save({"model": torch.zeros(3)}, path, _use_new_zipfile_serialization=save == "zip")
    result = runner.invoke(main, ["info", "--weights", str(path)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("stvsr: error:") and result.output.count("\n") == 1, result.output
    assert "unexpected" not in result.output and "stvsr" in result.output.split("error:", 1)[1]
    assert "weights_only" not in result.output  # torch's advice to load it unsafely is not passed on


def test_a_pickle_of_objects_is_not_a_weights_file_and_no_unsafe_advice_is_given(runner, tmp_path):
    import pickle

    path = tmp_path / "model.pth"
    path.write_bytes(pickle.dumps({"model": pytest.approx(1)}, protocol=2))  # a class weights_only refuses
    result = runner.invoke(main, ["info", "--weights", str(path)])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert result.output.count("\n") == 1 and "not a stvsr weights file" in line, result.output
    assert "ApproxScalar" in line and "weights_only" not in line, result.output


@pytest.mark.parametrize("where", ["group", "command"])
def test_debug_shows_the_exception(runner, tmp_path, where):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"definitely not weights")
    command = ["info", "--weights", str(path)]
    result = runner.invoke(main, ["--debug", *command] if where == "group" else [*command, "--debug"])
    assert result.exit_code != 0
    assert isinstance(result.exception, WeightsError)


def test_every_command_has_help_and_a_debug_flag(runner):
    for name in main.commands:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert "--debug" in result.output and "Example" in result.output, name


def test_info_alone_describes_the_shipped_weights(runner):
    from stvsr_cli.weights import default_weights_path

    result = runner.invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert str(default_weights_path()) in result.output
    assert "small" in result.output and f"{MEGAN(PRESETS['small']).num_parameters():,}" in result.output


def test_info_takes_one_source_at_most(runner, tmp_path):
    result = runner.invoke(main, ["info", "--preset", "tiny", "--weights", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 1
    assert "one of --preset or --weights" in result.output


def test_info_shows_a_long_weights_file_name_whole(runner, tmp_path):
    path = tmp_path / "a-rather-long-name-for-a-weights-file.safetensors"
    save_weights(MEGAN(PRESETS["tiny"]), path)
    result = runner.invoke(main, ["info", "--weights", str(path)], env={"COLUMNS": "60"}, terminal_width=60)
    assert result.exit_code == 0, result.output
    assert any(path.name in line for line in result.output.splitlines()), result.output  # not split mid-word


def test_unknown_preset_is_a_usage_error(runner):
    result = runner.invoke(main, ["info", "--preset", "huge"])
    assert result.exit_code == 2
    assert "huge" in result.output


def test_unexpected_errors_are_one_line_too(runner, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("stvsr_cli.networks.build_network", explode)
    result = runner.invoke(main, ["info", "--preset", "tiny"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "stvsr: unexpected RuntimeError: boom. Run again with `stvsr --debug ...` for the traceback and report it."
    ]


def test_ctrl_c_exits_130(runner, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("stvsr_cli.networks.build_network", interrupt)
    result = runner.invoke(main, ["info", "--preset", "tiny"])
    assert result.exit_code == 130
    assert result.output == "stvsr: interrupted\n"


def test_ctrl_c_while_a_command_loads_the_library_is_one_line(runner, monkeypatch):
    """The first seconds of a command go to importing PyTorch and PyAV: Ctrl-C
    there used to print a 20-line traceback."""

    class CtrlCDuringImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "stvsr_cli.upscale":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "stvsr_cli.upscale", raising=False)
    monkeypatch.setattr(sys, "meta_path", [CtrlCDuringImport(), *sys.meta_path])
    result = runner.invoke(main, ["upscale", "in.mp4", "out.mp4"])
    assert result.exit_code == 130
    assert result.output == "stvsr: interrupted\n"


def test_ctrl_c_while_the_command_line_itself_loads_is_one_line():
    """The `stvsr` script imports the CLI before any of its code runs."""
    code = (
        "import importlib.abc, sys\n"
        "class CtrlC(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'stvsr_cli.defaults':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "import stvsr_cli.cli\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ROOT_ON_PATH)
    assert (result.returncode, result.stderr) == (130, "stvsr: interrupted\n")


def test_the_command_line_starts_without_pytorch():
    """`stvsr --help` and `--version` answer without importing PyTorch, PyAV
    or rich (seconds of start-up)."""
    code = (
        "import sys, stvsr_cli.cli; "
        "print(sorted(m for m in ('torch', 'torchvision', 'av', 'numpy', 'cv2', 'rich') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=ROOT_ON_PATH)
    assert result.stdout == "[]\n"


def test_the_library_names_still_import_from_the_package():
    import stvsr_cli
    from stvsr_cli import MEGAN, PRESETS, Upscaler, load_model, save_weights  # noqa: F401

    assert MEGAN.__module__ == "stvsr_cli.megan" and Upscaler.__module__ == "stvsr_cli.inference"
    assert set(stvsr_cli.__all__) <= set(dir(stvsr_cli))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        stvsr_cli.nothing


def test_encoders_lists_the_encoders_of_the_ffmpeg_stvsr_runs(runner):
    from stvsr_cli.encode import ffmpeg_exe

    result = runner.invoke(main, ["encoders"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "libx264" in result.output and "libvpx-vp9" in result.output and "aac " not in result.output
    assert ffmpeg_exe() in result.output.replace("\n", "")


def test_encoders_with_a_name_shows_that_encoders_options(runner):
    result = runner.invoke(main, ["encoders", "libx264"])
    assert result.exit_code == 0, result.output
    assert "crf" in result.output and "Supported pixel formats" in result.output
    result = runner.invoke(main, ["encoders", "nosuch264"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "no encoder named 'nosuch264'" in result.output and "stvsr encoders" in result.output
