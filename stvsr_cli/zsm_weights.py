"""Zooming Slow-Mo's released weights: recognise their layout, rename to stvsr's.

The authors publish their trained network (`xiang2020zooming.pth`) as a plain
state dict saved with `torch.save`, under the names of their code's modules:
`conv_first.weight`, `pcd_align.L3_dcnpack_1.conv_offset_mask.weight`,
`ConvBLSTM.forward_net.pcd_h.fusion.bias`, `recon_trunk.39.conv2.bias`, ...
No configuration travels with it, so the layout is recognised from the names
(`is_zsm_layout`) and the sizes are read from the tensors (`zsm_config`): the
width from the first convolution (64, the only one the layout fits), the
deformable groups from an offset head, the residual blocks of extraction and
reconstruction by counting them.

Only names change (`stvsr_name`); every tensor keeps its shape and values:

- a DCNv2 `DCN_sep` holds the sampled convolution's `weight` and `bias` and
  its `conv_offset_mask`, which `stvsr_cli.layers.ModulatedDeformConv` calls
  `conv` and `offset_mask`. Its 27 G output channels are split alike: DCN_sep
  chunks them in three and joins the first two as the offsets, so offsets
  are the first 18 G channels and masks (through a sigmoid) the last 9 G,
  and the offsets are read in the same order, (group, tap, (dy, dx)), by
  DCNv2's kernel and by `torchvision.ops.deform_conv2d`;
- a level of ZSM's `PCD_Align` (L1 full size, L2 half, L3 quarter) is a
  level of `PCDAlignment` (levels 0, 1, 2), its suffix _1 the first feature
  sampled towards the second (`align_a`) and _2 the reverse (`align_b`);
- the frame feature interpolation's pyramid convolutions, alignment and 1x1
  fusion sit at the top of ZSM's network, and again inside each of the
  ConvLSTM's two state alignments (`pcd_h`, `pcd_c`), which blend (input,
  state) in that order, as `stvsr_cli.zsm` does;
- ZSM runs one ConvLSTM (`forward_net`) over the sequence and over it
  reversed, as stvsr's does, and merges the two by `conv_1x1`.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from torch import Tensor

from .config import ZSMConfig
from .errors import WeightsError

# Names every ZSM checkpoint has, whatever its sizes: enough to tell the layout.
SIGNATURE = (
    "conv_first.weight",
    "pcd_align.L1_dcnpack_1.conv_offset_mask.weight",
    "ConvBLSTM.forward_net.cell_list.0.conv.weight",
    "ConvBLSTM.conv_1x1.weight",
    "upconv1.weight",
)
_TAPS = 9  # 3x3 deformable kernels
_CHANNELS = 64  # ZSM's code fixes its last two convolutions at 64 channels: its layout fits stvsr's at 64 only

# ZSM's prefix of each deformable feature blend -> stvsr's
_BLENDS = {
    "": "interpolation.interpolate.",
    "ConvBLSTM.forward_net.pcd_h.": "convlstm.align_hidden.",
    "ConvBLSTM.forward_net.pcd_c.": "convlstm.align_cell.",
}
_PYRAMID = {"fea_L2_conv1": "down.0.0", "fea_L2_conv2": "down.0.2", "fea_L3_conv1": "down.1.0", "fea_L3_conv2": "down.1.2"}
_UPSAMPLE = {"upconv1": "0", "upconv2": "3", "HRconv": "6", "conv_last": "8"}  # indices in the upsample Sequential
_PCD = re.compile(r"pcd_align\.L([123])_(offset_conv[123]|dcnpack|fea_conv)_([12])\.(.+)")
_PARAMETER = r"(weight|bias)"


def is_zsm_layout(names: Collection[str]) -> bool:
    """Whether a state dict's names (wrapper prefixes removed) are ZSM's released layout."""
    return all(name in names for name in SIGNATURE)


def zsm_config(state: dict[str, Tensor], source: str = "the weights") -> ZSMConfig:
    """The sizes of the ZSM network a state dict in ZSM's layout holds."""
    channels = state["conv_first.weight"].shape[0]
    if channels != _CHANNELS:
        raise WeightsError(
            f"{source} is a Zooming Slow-Mo network {channels} channels wide; stvsr reads ZSM's layout at the "
            f"released width, {_CHANNELS} (its code fixes the last stages at {_CHANNELS} whatever the width)"
        )
    offsets_and_masks = state["pcd_align.L1_dcnpack_1.conv_offset_mask.weight"].shape[0]
    if offsets_and_masks % (3 * _TAPS):
        raise WeightsError(
            f"{source}: pcd_align.L1_dcnpack_1.conv_offset_mask.weight has {offsets_and_masks} output channels, "
            "but a 3x3 DCNv2 offset head has 27 per deformable group"
        )
    return ZSMConfig(
        channels=channels,
        deformable_groups=offsets_and_masks // (3 * _TAPS),
        extraction_blocks=_count_blocks(state, "feature_extraction", source),
        residual_blocks=_count_blocks(state, "recon_trunk", source),
    )


def _count_blocks(state: dict[str, Tensor], prefix: str, source: str) -> int:
    """Blocks named prefix.0, prefix.1, ...: how many, checking that none is missing."""
    found = {int(m.group(1)) for name in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", name))}
    if found != set(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - found)
        raise WeightsError(f"{source} lacks {prefix} block(s) {missing} of 0 to {max(found)}: is it complete?")
    return len(found)


def stvsr_name(name: str) -> str | None:
    """stvsr's name for a tensor of ZSM's layout, or None for a name that layout does not have."""
    if m := re.fullmatch(rf"conv_first\.{_PARAMETER}", name):
        return f"extraction.shallow.{m[1]}"
    if m := re.fullmatch(rf"feature_extraction\.(\d+)\.(conv[12])\.{_PARAMETER}", name):
        return f"extraction.blocks.{m[1]}.{m[2]}.{m[3]}"
    if m := re.fullmatch(rf"recon_trunk\.(\d+)\.(conv[12])\.{_PARAMETER}", name):
        return f"reconstruction.body.{m[1]}.{m[2]}.{m[3]}"
    if m := re.fullmatch(rf"({'|'.join(_UPSAMPLE)})\.{_PARAMETER}", name):
        return f"reconstruction.upsample.{_UPSAMPLE[m[1]]}.{m[2]}"
    if m := re.fullmatch(rf"ConvBLSTM\.forward_net\.cell_list\.0\.conv\.{_PARAMETER}", name):
        return f"convlstm.step.gates.{m[1]}"
    if m := re.fullmatch(rf"ConvBLSTM\.conv_1x1\.{_PARAMETER}", name):
        return f"convlstm.merge.{m[1]}"
    for zsm_prefix, prefix in sorted(_BLENDS.items(), key=lambda item: -len(item[0])):  # longest prefix first
        if name.startswith(zsm_prefix):
            inner = _blend_name(name[len(zsm_prefix):])
            return None if inner is None else prefix + inner
    return None


def _blend_name(name: str) -> str | None:
    """Inside one deformable feature blend: ZSM's Easy_PCD names -> `DeformableFeatureBlend`'s."""
    if m := re.fullmatch(rf"({'|'.join(_PYRAMID)})\.{_PARAMETER}", name):
        return f"pyramid.{_PYRAMID[m[1]]}.{m[2]}"
    if m := re.fullmatch(rf"fusion\.{_PARAMETER}", name):
        return f"blend.{m[1]}"
    if not (m := _PCD.fullmatch(name)):
        return None
    level, part, which, rest = int(m[1]), m[2], m[3], m[4]
    prefix = f"{'align_a' if which == '1' else 'align_b'}.levels.{level - 1}"
    if part == "dcnpack":
        if rest in ("weight", "bias"):
            return f"{prefix}.deform.conv.{rest}"
        inner = re.fullmatch(rf"conv_offset_mask\.{_PARAMETER}", rest)
        return f"{prefix}.deform.offset_mask.{inner[1]}" if inner else None
    if rest not in ("weight", "bias"):
        return None
    coarsest = level == 3  # no coarser level to cascade from: conv1 then conv2
    layer = {
        "offset_conv1": "offset_in",
        "offset_conv2": "offset_out" if coarsest else "offset_cascade",
        "offset_conv3": None if coarsest else "offset_out",
        "fea_conv": None if coarsest else "feature_cascade",
    }[part]
    return None if layer is None else f"{prefix}.{layer}.{rest}"


def from_zsm_state(state: dict[str, Tensor], source: str) -> tuple[ZSMConfig, dict[str, Tensor]]:
    """The configuration and the state dict, under stvsr's names, of ZSM weights.

    Names ZSM's layout does not have are refused, listed; names it lacks
    are reported by the strict loading that follows (`weights.load_state_strict`).
    """
    config = zsm_config(state, source)
    renamed, unknown = {}, []
    for name, tensor in state.items():
        new = stvsr_name(name)
        if new is None:
            unknown.append(name)
        else:
            renamed[new] = tensor
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise WeightsError(
            f"{source} has Zooming Slow-Mo's layout but also {len(unknown)} tensor(s) that layout does not have "
            f"({shown}); was it saved from a modified network?"
        )
    return config, renamed
