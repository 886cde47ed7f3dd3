"""Weights files: safetensors with the network configuration in the metadata.

A weights file alone rebuilds its network. Pickled PyTorch checkpoints
(`.pt`, `.pth`) are read only through `torch.load(weights_only=True)`, which
refuses anything but tensors and plain containers: loading a file never runs
code from it.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import __version__
from .config import MEGANConfig, preset_name
from .errors import StvsrError
from .megan import MEGAN

FORMAT = "stvsr-megan"
DEFAULT_WEIGHTS = "default.safetensors"  # the "format" entry of a weights file's metadata
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default container
_PICKLE_MAGIC = b"\x80"  # torch.save's legacy container starts with a pickle protocol opcode


class WeightsError(StvsrError):
    """A weights file that cannot be used, with the reason in words."""


def save_weights(
    model: MEGAN,
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
        "config": json.dumps(model.config.to_dict()),
        "preset": preset_name(model.config) or "custom",
        "stvsr_version": __version__,
        "trained": "yes" if trained else "no",
        "description": description,
    }
    write_atomically(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call `write(temporary)` on a file beside `path`, then rename it onto `path`.

    A reader sees the old file or the new one, never half of one: a crash or
    a full disk during `write` leaves `path` as it was. The file gets the
    permissions a plain `open()` would give it (mkstemp's are owner-only).
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


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


def read_weights(path: str | os.PathLike) -> tuple[MEGANConfig, dict[str, Tensor]]:
    """The configuration and state dict stored in a weights file or checkpoint."""
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


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> MEGAN:
    """Build the network a weights file describes and load its weights, in eval mode."""
    config, state = read_weights(path)
    model = MEGAN(config)
    load_state_strict(model, state, source=str(path))
    return model.to(device).eval()


def clean_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip the prefixes that wrappers (DDP, torch.compile) add to parameter names."""
    cleaned = {}
    for name, tensor in state.items():
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        cleaned[name] = tensor
    return cleaned


def load_state_strict(model: nn.Module, state: dict[str, Tensor], source: str = "the weights") -> None:
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
            + ". Was it saved by a different version of stvsr?"
        )
    model.load_state_dict(state, strict=True)


def _listing(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} ({', '.join(names[:shown])}{more})"


def _read_safetensors(path: Path) -> tuple[MEGANConfig, dict[str, Tensor]]:
    not_weights = f"{path} is not a stvsr weights file (expected .safetensors written by stvsr, or a PyTorch checkpoint)"
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            if metadata.get("format") != FORMAT or "config" not in metadata:
                raise WeightsError(f"{not_weights}: its metadata has no {FORMAT} network configuration")
            state = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsError(f"{not_weights}: {_first_line(error)}") from error
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as error:
        raise WeightsError(f"{path} has a damaged network configuration: {error}") from error
    return _parse_config(config, path), state


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
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, SafetensorError) as error:
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint of plain tensors "
            f"(stvsr never unpickles arbitrary objects): {_first_line(error)}"
        ) from error


def _read_checkpoint(path: Path) -> tuple[MEGANConfig, dict[str, Tensor]]:
    checkpoint = read_checkpoint(path)
    state = None
    if isinstance(checkpoint, dict):
        state = next((checkpoint[key] for key in ("model", "state_dict") if isinstance(checkpoint.get(key), dict)), None)
    if state is None or not isinstance(checkpoint.get("config"), dict):
        raise WeightsError(
            f"{path} is a PyTorch checkpoint without the 'config' and 'model' entries stvsr writes, "
            "so the network cannot be rebuilt from it"
        )
    return _parse_config(checkpoint["config"], path), state


def _parse_config(values: object, path: Path) -> MEGANConfig:
    if not isinstance(values, dict):
        raise WeightsError(f"{path} has a damaged network configuration: {values!r}")
    try:
        return MEGANConfig.from_dict(values)
    except StvsrError as error:
        raise WeightsError(f"{path}: {error}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
