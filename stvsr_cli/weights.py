"""Weights files: safetensors with the network configuration in the metadata.

A weights file alone rebuilds its network. Its metadata holds "format"
(always "stvsr-megan", the layout's name since the first release, whichever
the network), "network" ("megan" or "zsm"; files written before Zooming
Slow-Mo was added have none and are MEGAN), "config" (the configuration as
JSON), "preset", "trained", "stvsr_version" and "description".

Three layouts load (`open_weights`): stvsr's safetensors files; stvsr's
training checkpoints (a dict with "config" and "model"); and Zooming
Slow-Mo's released weights, a bare state dict recognised from its names
(`stvsr_cli.zsm_weights`), in a .pth or in a safetensors file without
stvsr's metadata. `convert_weights` rewrites any of them as stvsr's
safetensors. Pickled PyTorch files (`.pt`, `.pth`) are read only through
`torch.load(weights_only=True)`, which refuses anything but tensors and
plain containers: loading a file never runs code from it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import __version__
from .config import NetworkConfig, config_from_dict, preset_name
from .errors import StvsrError, WeightsError, first_line
from .files import write_atomically
from .networks import Network, build_network
from .zsm_weights import SIGNATURE as ZSM_SIGNATURE
from .zsm_weights import from_zsm_state, is_zsm_layout

FORMAT = "stvsr-megan"  # the "format" entry of a weights file's metadata
ZSM_LAYOUT = "Zooming Slow-Mo weights"
DEFAULT_WEIGHTS = "default.safetensors"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default container
_PICKLE_MAGIC = b"\x80"  # torch.save's legacy container starts with a pickle protocol opcode


def save_weights(
    model: Network,
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    *,
    trained: bool = True,
    description: str = "",
) -> None:
    """Write `model`'s weights and configuration to a safetensors file.

    `dtype` (for example torch.float16) stores the floating-point tensors at
    that precision; loading converts them back to the network's precision.
    `trained=False` marks weights that were never trained (a placeholder),
    so that tools can warn that their output is not a real upscale.
    The file appears atomically: it is written beside `path` and renamed.
    """
    state = {
        name: (t.to(dtype) if dtype is not None and t.is_floating_point() else t).detach().cpu().contiguous()
        for name, t in clean_state_dict(model.state_dict()).items()
    }
    metadata = {
        "format": FORMAT,
        "network": model.config.network,
        "config": json.dumps(model.config.to_dict()),
        "preset": preset_name(model.config) or "custom",
        "stvsr_version": __version__,
        "trained": "yes" if trained else "no",
        "description": description,
    }
    write_atomically(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def default_weights_path() -> Path:
    """The weights that ship with stvsr: weights/default.safetensors in a
    source checkout (and an editable install), stvsr_cli/weights_dir/ in an
    installed wheel (pyproject.toml maps one onto the other)."""
    package = Path(__file__).resolve().parent
    installed, checkout = package / "weights_dir" / DEFAULT_WEIGHTS, package.parent / "weights" / DEFAULT_WEIGHTS
    return installed if installed.is_file() else checkout


def weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors weights file ({} for other files)."""
    try:
        with safe_open(Path(path), framework="pt") as file:
            return dict(file.metadata() or {})
    except (SafetensorError, OSError):
        return {}


def is_untrained(path: str | os.PathLike) -> bool:
    """Whether a weights file says it was never trained (a placeholder)."""
    return weights_metadata(path).get("trained") == "no"


@dataclass(frozen=True)
class Weights:
    """What a weights file holds, whatever its layout."""

    config: NetworkConfig
    state: dict[str, Tensor]  # under stvsr's names
    layout: str  # in words, e.g. "Zooming Slow-Mo weights"
    metadata: dict[str, str]  # a stvsr safetensors file's ({} for the other layouts)

    def load_into(self, model: nn.Module, path: str | os.PathLike) -> None:
        """Load the state strictly into `model`, a network built from `config`."""
        hint = (
            "Is it a complete checkpoint of the released Zooming Slow-Mo architecture?" if self.layout == ZSM_LAYOUT
            else "Was it saved by a different version of stvsr?"
        )
        load_state_strict(model, self.state, source=f"{path} ({self.layout})", hint=hint)


def open_weights(path: str | os.PathLike) -> Weights:
    """The configuration and state dict in a weights file of any layout stvsr loads."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass --weights with the path of a .safetensors file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path} is empty (0 bytes), so it is not a stvsr weights file; "
                           "was its copy or download cut short?")
    with path.open("rb") as file:
        head = file.read(9)
    # safetensors: an 8-byte little-endian header length, then a JSON header.
    # Checked first: the length's first byte may equal a pickle opcode.
    header_fits = len(head) == 9 and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size
    if not (header_fits and head[8:9] == b"{") and head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        return _read_checkpoint(path)
    return _read_safetensors(path)


def read_weights(path: str | os.PathLike) -> tuple[NetworkConfig, dict[str, Tensor]]:
    """The configuration and state dict stored in a weights file or checkpoint."""
    weights = open_weights(path)
    return weights.config, weights.state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Network:
    """Build the network a weights file describes and load its weights, in eval mode."""
    return _build_and_load(open_weights(path), path).to(device).eval()


def convert_weights(source: str | os.PathLike, destination: str | os.PathLike, *, overwrite: bool = False) -> Network:
    """Rewrite weights of any layout stvsr loads as a stvsr safetensors file.

    The result carries its network's configuration and holds nothing but
    tensors, so it is safe to share and loads without unpickling anything.
    The tensors are checked by loading them into their network first, and
    keep their values and precision (a float16 file stays float16); the
    description and trained flag of a stvsr file are kept, so converting a
    converted file gives the same file again. Returns the loaded network.
    """
    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise WeightsError(f"{destination}: the converted weights are a safetensors file; name it *.safetensors")
    if destination.exists() and not overwrite:
        raise WeightsError(f"{destination} exists; add --overwrite to replace it")
    weights = open_weights(source)
    model = _build_and_load(weights, source)
    floating = {t.dtype for t in weights.state.values() if t.is_floating_point()}
    description = weights.metadata.get("description") or (
        f"{weights.layout}, converted from {Path(source).name} by stvsr {__version__}"
    )
    save_weights(model, destination, dtype=floating.pop() if len(floating) == 1 else None,
                 trained=weights.metadata.get("trained") != "no", description=description)
    return model.eval()


def _build_and_load(weights: Weights, path: str | os.PathLike) -> Network:
    model = build_network(weights.config)
    weights.load_into(model, path)
    return model


def clean_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip the prefixes that wrappers (DDP, torch.compile) add to parameter names."""
    cleaned = {}
    for name, tensor in state.items():
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        cleaned[name] = tensor
    return cleaned


def load_state_strict(
    model: nn.Module,
    state: dict[str, Tensor],
    source: str = "the weights",
    hint: str = "Was it saved by a different version of stvsr?",
) -> None:
    """Load `state` into `model`, or say in words which names and shapes do not match."""
    state = clean_state_dict(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{name} {tuple(state[name].shape)} instead of {tuple(expected[name].shape)}"
        for name in set(expected) & set(state)
        if state[name].shape != expected[name].shape
    )
    problems = [
        f"{label} {_listing(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
        if names
    ]
    if problems:
        raise WeightsError(
            f"{source} does not match the network its configuration describes: "
            + "; ".join(problems)
            + f". {hint}"
        )
    model.load_state_dict(state, strict=True)


def _listing(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} ({', '.join(names[:shown])}{more})"


def _read_safetensors(path: Path) -> Weights:
    not_weights = (
        f"{path} is not a stvsr weights file (expected .safetensors written by stvsr, Zooming Slow-Mo's "
        "released weights, or a PyTorch checkpoint)"
    )
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            ours = metadata.get("format") == FORMAT and "config" in metadata
            if not ours and not is_zsm_layout(clean_state_dict(dict.fromkeys(file.keys()))):
                raise WeightsError(
                    f"{not_weights}: its metadata has no {FORMAT} network configuration, "
                    f"and its tensor names are not Zooming Slow-Mo's ({', '.join(ZSM_SIGNATURE[:2])}, ...)"
                )
            state = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsError(f"{not_weights}: {first_line(error)}") from error
    if not ours:
        config, state = from_zsm_state(clean_state_dict(state), str(path))
        return Weights(config, state, ZSM_LAYOUT, {})
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as error:
        raise WeightsError(f"{path} has a damaged network configuration: {error}") from error
    return Weights(_parse_config(metadata.get("network", "megan"), config, path), state, "stvsr weights", metadata)


def read_checkpoint(path: str | os.PathLike) -> object:
    """`torch.load(weights_only=True)` of a pickled checkpoint, whatever its
    name: given a path, torch.load reads a file named `.safetensors` as
    safetensors, and fails on a pickle that is named so; given the open
    file, it looks at the content. Raises WeightsError for anything else."""
    path = Path(path)
    try:
        # torch warns about pickle protocols it may not read; the error, if any, says it in one line
        with path.open("rb") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message goes on about retrying with weights_only=False, which
        # would run whatever code the file holds: name only what it holds.
        found = re.search(r"GLOBAL (\S+)", str(error))
        holds = f"Python objects ({found.group(1)})" if found else "Python objects"
        raise WeightsError(
            f"{path} is not a stvsr weights file: it is a pickle holding {holds}, not plain tensors, "
            "and stvsr never unpickles arbitrary objects"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as error:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {first_line(error)}") from error


def _read_checkpoint(path: Path) -> Weights:
    checkpoint = read_checkpoint(path)
    state = None
    if isinstance(checkpoint, dict):
        state = next((checkpoint[key] for key in ("model", "state_dict") if isinstance(checkpoint.get(key), dict)), None)
        if state is not None and isinstance(checkpoint.get("config"), dict):  # stvsr's training checkpoint
            config = _parse_config(checkpoint.get("network", "megan"), checkpoint["config"], path)
            return Weights(config, state, "stvsr checkpoint", {})
        # Zooming Slow-Mo's: a bare state dict (or one wrapped as {"state_dict": ...})
        state = state if state is not None else checkpoint
        if all(isinstance(name, str) and isinstance(t, Tensor) for name, t in state.items()):
            state = clean_state_dict(state)
            if is_zsm_layout(state):
                config, state = from_zsm_state(state, str(path))
                return Weights(config, state, ZSM_LAYOUT, {})
    if isinstance(checkpoint, dict) and checkpoint:
        found = f"; its first names are {', '.join(map(str, list(checkpoint)[:3]))}"
    else:
        found = f"; it holds {'an empty dict' if isinstance(checkpoint, dict) else 'a ' + type(checkpoint).__name__}"
    raise WeightsError(
        f"{path} is a PyTorch checkpoint in no layout stvsr knows: expected a stvsr checkpoint (with the "
        f"'config' and 'model' entries stvsr writes) or Zooming Slow-Mo's released state dict "
        f"({', '.join(ZSM_SIGNATURE[:2])}, ...){found}"
    )


def _parse_config(network: str, values: object, path: Path) -> NetworkConfig:
    if not isinstance(values, dict):
        raise WeightsError(f"{path} has a damaged network configuration: {values!r}")
    try:
        return config_from_dict(network, values)
    except StvsrError as error:
        raise WeightsError(f"{path}: {error}") from error
