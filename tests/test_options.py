"""Each option is defined once and checked when it is made: the options
dataclasses give the command line its defaults, and refuse bad values with
one line a user can act on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stvsr_cli import StvsrError
from stvsr_cli.cli import main
from stvsr_cli.encode import EncodeOptions
from stvsr_cli.evaluate import EvalOptions
from stvsr_cli.options import BenchOptions, TrainOptions
from stvsr_cli.upscale import UpscaleOptions


def _library_default(options_class, name):
    (field,) = [f for f in dataclasses.fields(options_class) if f.name == name]
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


@pytest.mark.parametrize("command, args, options_class",
                         [("train", ["data", "--out", "run"], TrainOptions), ("bench", [], BenchOptions)])
def test_the_command_line_defaults_are_the_options_dataclass_defaults(command, args, options_class):
    """What a command passes for an option not given is the library's default (or None, or nothing,
    which the command leaves to the library)."""
    given = main.commands[command].make_context(command, list(args)).params
    names = {f.name for f in dataclasses.fields(options_class)
             if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    compared = [name for name in names & set(given) if given[name] not in (None, ())]
    assert len(compared) >= (15 if command == "train" else 6), compared
    for name in compared:
        value = tuple(given[name]) if isinstance(given[name], list) else given[name]
        assert value == _library_default(options_class, name), name


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TrainOptions(data=["x"], out="run", iters=0), "--iters must be positive"),
        (lambda: TrainOptions(data=["x"], out="run", lr=1e-3, lr_min=1e-2), "need 0 < --lr-min <= --lr"),
        (lambda: TrainOptions(data=["x"], out="run", preset="huge"), "--preset must be one of"),
        (lambda: TrainOptions(data=[], out="run"), "give at least one DATA source"),
        (lambda: BenchOptions(runs=0), "--runs must be at least 1"),
        (lambda: BenchOptions(presets=["huge"]), "unknown preset(s) ['huge']"),
        (lambda: BenchOptions(motion_priors=["dis"]), "unknown motion prior"),
        (lambda: BenchOptions(tile=10), "--tile 10 is too small"),
        (lambda: UpscaleOptions(batch=0), "--batch must be at least 1"),
        (lambda: UpscaleOptions(scene_threshold=2.0), "--scene-threshold must be from 0 to 1"),
        (lambda: EvalOptions(tile=10), "--tile 10 is too small"),
        (lambda: EncodeOptions(crf=-1), "--crf must not be negative"),
    ],
)
def test_every_options_class_refuses_bad_values_when_made(make, message):
    with pytest.raises(StvsrError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_defaults_are_valid():
    TrainOptions(data=["x"], out="run")
    for options_class in (BenchOptions, UpscaleOptions, EvalOptions, EncodeOptions):
        options_class()


@pytest.mark.parametrize("spec, expected", [
    ("clips", "/start/clips"),
    ("objects:../photos", "objects:/start/../photos"),
    ("/data/vimeo", "/data/vimeo"),
    ("vimeo:/data/vimeo", "vimeo:/data/vimeo"),
])
def test_a_resumed_run_reads_its_data_paths_from_where_it_started(spec, expected):
    from stvsr_cli.options import _from_folder

    assert _from_folder(spec, Path("/start")) == expected
