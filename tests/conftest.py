import pytest
import torch

from stvsr_cli import MEGAN, PRESETS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_model() -> MEGAN:
    return MEGAN(PRESETS["tiny"]).eval()


def perturb_zero_initialised(model: torch.nn.Module, scale: float = 0.01) -> None:
    """Give the layers that start at zero (deformable offset/mask heads, the
    non-local W_z) small random weights, as after some training: sampling
    positions really move and gradients reach the layers behind them."""
    from stvsr_cli.layers import ModulatedDeformConv, NonLocalBlock

    for module in model.modules():
        if isinstance(module, ModulatedDeformConv):
            torch.nn.init.normal_(module.offset_mask.weight, std=scale)
            torch.nn.init.normal_(module.offset_mask.bias, std=scale * 10)
        if isinstance(module, NonLocalBlock):
            torch.nn.init.normal_(module.w_z.weight, std=scale * 10)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A weights file of the tiny network whose output depends on the input
    (its zero-initialised layers perturbed), so that a repeated frame and a
    blended one can be told apart. Modules that need other weights define
    their own `weights`."""
    from stvsr_cli import save_weights

    torch.manual_seed(0)
    model = MEGAN(PRESETS["tiny"])
    perturb_zero_initialised(model)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(model, path)
    return path
