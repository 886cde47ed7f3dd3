"""Weights files: round trips, and every kind of bad file refused in words."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from conftest import perturb_zero_initialised
from stvsr_cli import MEGAN, PRESETS, WeightsError, load_model, read_weights, save_weights
from stvsr_cli.weights import clean_state_dict, load_state_strict


@pytest.fixture
def weights_file(tmp_path, tiny_model):
    perturb_zero_initialised(tiny_model)
    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, path)
    return path


def test_round_trip_rebuilds_the_network_from_the_file_alone(weights_file, tiny_model):
    loaded = load_model(weights_file)
    assert loaded.config == PRESETS["tiny"]
    assert not loaded.training
    x = torch.rand(1, 4, 3, 12, 16)
    with torch.inference_mode():
        assert torch.equal(loaded(x), tiny_model(x))


def test_saving_leaves_no_temporary_files(weights_file):
    assert sorted(os.listdir(weights_file.parent)) == [weights_file.name]


def test_half_precision_file_loads_into_an_fp32_network(tmp_path, tiny_model):
    path = tmp_path / "half.safetensors"
    save_weights(tiny_model, path, dtype=torch.float16)
    _, state = read_weights(path)
    assert all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    loaded = load_model(path)
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(1, 4, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), tiny_model(x), rtol=1e-2, atol=1e-2)


def test_pytorch_checkpoint_with_config_is_accepted(tmp_path, tiny_model):
    path = tmp_path / "run.pt"
    state = {f"module.{k}": v for k, v in tiny_model.state_dict().items()}  # as saved from DDP
    torch.save({"config": tiny_model.config.to_dict(), "model": state, "step": 10}, path)
    loaded = load_model(path)
    assert torch.equal(loaded.lmga.refine[0].weight, tiny_model.lmga.refine[0].weight)


def test_prefixes_of_wrappers_are_cleaned():
    t = torch.zeros(1)
    assert list(clean_state_dict({"module._orig_mod.a.b": t, "c": t})) == ["a.b", "c"]


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused_not_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"config": PRESETS["tiny"].to_dict(), "model": {}, "payload": _Payload()}, path)
    with pytest.raises(WeightsError, match="never unpickles arbitrary objects"):
        read_weights(path)


def test_checkpoint_without_config_is_refused(tmp_path, tiny_model):
    path = tmp_path / "bare.pth"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(WeightsError, match="no layout stvsr knows: expected a stvsr checkpoint \\(with the 'config'"):
        read_weights(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am a text file\n", os.urandom(4096), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"],
    ids=["empty", "text", "random", "broken-header"],
)
def test_files_that_are_not_weights_are_refused_in_one_line(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="is not a stvsr weights file") as info:
        read_weights(path)
    assert "\n" not in str(info.value)


def test_truncated_weights_file_is_refused(weights_file):
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="is not a stvsr weights file"):
        load_model(weights_file)


def test_safetensors_from_elsewhere_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="no stvsr-megan network configuration, and its tensor names are not Zoom"):
        read_weights(path)


def test_missing_file_says_so(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights(tmp_path / "nope.safetensors")


def test_mismatched_keys_are_listed_in_words(tmp_path, tiny_model):
    state = tiny_model.state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["lmga.refine.0.weight"]
    state["lmga.refine.2.bias"] = torch.zeros(5)
    path = tmp_path / "edited.safetensors"
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        path,
        metadata={"format": "stvsr-megan", "config": json.dumps(tiny_model.config.to_dict())},
    )
    with pytest.raises(WeightsError) as info:
        load_model(path)
    message = str(info.value)
    assert "missing 1 (lmga.refine.0.weight)" in message
    assert "unexpected 1 (extra.weight)" in message
    assert "wrong shape 1 (lmga.refine.2.bias (5,) instead of (8,))" in message


def test_strict_loading_shortens_long_lists():
    model = MEGAN(PRESETS["tiny"])
    with pytest.raises(WeightsError, match=r"missing \d+ \([^)]*and \d+ more\)"):
        load_state_strict(model, {})



def test_safetensors_whose_header_length_looks_like_a_pickle_still_loads(tmp_path, tiny_model):
    """The header length's first byte can equal the pickle opcode 0x80; the file is still safetensors."""
    path = tmp_path / "odd.safetensors"
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    config = json.dumps(tiny_model.config.to_dict())
    for padding in range(300):
        save_file(state, path, metadata={"format": "stvsr-megan", "config": config, "note": "x" * padding})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert load_model(path).config == tiny_model.config


def test_weights_file_gets_the_permissions_of_an_ordinary_file(tmp_path, tiny_model):
    import os

    mask = os.umask(0o022)
    try:
        save_weights(tiny_model, tmp_path / "tiny.safetensors")
    finally:
        os.umask(mask)
    assert (tmp_path / "tiny.safetensors").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temporary left behind
