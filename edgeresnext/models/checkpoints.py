"""Checkpoints that never execute what they load.

Accepted files:

* our own checkpoint: ``.safetensors`` whose metadata holds ``edgeresnext`` (JSON: arch, num_classes,
  in_channels, preprocessing, class names, metrics), or a ``.pt``/``.pth`` dict with ``format ==
  "edgeresnext-checkpoint"`` (training checkpoints also carry optimizer state);
* a bare torchvision-format state dict (``.pt``/``.pth``/``.safetensors``) when ``arch`` is given.

``.pt`` files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
only. A pickle that asks for anything else (a class, a function, ``os.system``) is refused unread.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeresnext.atomic import atomic_path
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import CheckpointError, ConfigError
from edgeresnext.models.registry import create, list_archs

logger = logging.getLogger(__name__)

FORMAT = "edgeresnext-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "edgeresnext"


@dataclass
class ModelMeta:
    """What travels with the weights into every later stage and the bundle."""

    arch: str
    num_classes: int
    in_channels: int = 3
    preprocess: Preprocess = field(default_factory=Preprocess)
    class_names: list[str] = field(default_factory=list)
    input_size: int = 224
    metrics: dict[str, float] = field(default_factory=dict)
    dataset: str | None = None
    recipe: str | None = None
    # Where metadata the weights did not carry came from (``class_names``, ``preprocess``): said by the build.
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def input_chw(self) -> tuple[int, int, int]:
        """The (channels, height, width) of one input the model takes."""
        return (self.in_channels, self.input_size, self.input_size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        if not self.provenance:  # metadata that came with the weights: the record stays as it was
            del data["provenance"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ModelMeta:
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: metadata must be a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(
                f"{source}: unknown metadata key {unknown[0]!r}; accepted: {', '.join(sorted(known))}"
            )
        missing = [key for key in ("arch", "num_classes") if key not in data]
        if missing:
            raise CheckpointError(f"{source}: metadata lacks {missing[0]!r}")
        types = {
            "arch": str,
            "num_classes": int,
            "in_channels": int,
            "input_size": int,
            "class_names": list,
            "metrics": dict,
            "dataset": (str, type(None)),
            "recipe": (str, type(None)),
            "preprocess": dict,
            "provenance": dict,
        }
        for key, expected in types.items():
            value = data.get(key)
            if key in data and (not isinstance(value, expected) or isinstance(value, bool)):
                raise CheckpointError(
                    f"{source}: metadata {key!r} is {value!r}; expected "
                    f"{getattr(expected, '__name__', 'a string or null')}"
                )
        if data["num_classes"] < 1 or data.get("in_channels", 1) < 1:
            raise CheckpointError(f"{source}: metadata num_classes/in_channels must be >= 1")
        if not all(isinstance(name, str) for name in data.get("class_names", [])):
            raise CheckpointError(f"{source}: metadata 'class_names' must be a list of strings")
        values = dict(data)
        try:
            values["preprocess"] = Preprocess.from_dict(values.get("preprocess", {}), f"{source}: preprocess")
        except ConfigError as err:
            raise CheckpointError(str(err)) from err
        return cls(**values)


@dataclass
class Checkpoint:
    """A checkpoint read from disk: weights, optional metadata, optional training state."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    meta: ModelMeta | None = None
    training: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    meta: ModelMeta,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically (temporary name, fsync, rename).

    ``.safetensors`` stores weights + metadata only (what we ship); ``.pt`` can also hold ``training``
    (optimizer, scheduler, epoch) for resuming.
    """
    path = Path(path)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    # safetensors removes its partial file and keeps only the text of ENOSPC: the size lets a short disk be told.
    with atomic_path(path, needed=sum(tensor.nbytes for tensor in state.values())) as tmp:
        if path.suffix == ".safetensors":
            if training:
                raise ValueError("training state cannot go into a .safetensors checkpoint; use .pt")
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={_META_KEY: json.dumps(meta.to_dict(), sort_keys=True)})
        else:
            payload = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "meta": meta.to_dict(),
                "state_dict": state,
                "training": training or {},
            }
            torch.save(payload, tmp)
    return path


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    meta = None
    if _META_KEY in metadata:
        try:
            meta = ModelMeta.from_dict(json.loads(metadata[_META_KEY]), str(path))
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: metadata {_META_KEY!r} is not valid JSON ({err})") from err
    return Checkpoint(path=path, state_dict=state, meta=meta)


# What a damaged file makes PyTorch's (safe) weights-only unpickler raise; all mean the same to the user.
_DAMAGED_PICKLE = (
    RuntimeError,
    EOFError,
    zipfile.BadZipFile,
    OSError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    UnicodeDecodeError,
    struct.error,
    MemoryError,
    OverflowError,
)


def _load_weights_only(path: Path) -> Any:
    """``torch.load`` with the weights-only unpickler, its refusals and a damaged file as CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses globals it does not allow; say so plainly instead of PyTorch's long advice.
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused, the file needs more than tensors and plain containers to load ({first_line}). "
            "edgeresnext never unpickles arbitrary objects; re-save it as a state dict or .safetensors"
        ) from err
    except _DAMAGED_PICKLE as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err


def _own_checkpoint(path: Path, payload: dict[str, Any]) -> Checkpoint:
    """An edgeresnext checkpoint (``format``): the version we read, a meta dict and a state dict of tensors."""
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {version!r}; this edgeresnext reads {FORMAT_VERSION}")
    for key in ("meta", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: an {FORMAT} without a {key!r} dict (damaged or not written by us)")
    if not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise CheckpointError(f"{path}: state_dict holds values that are not tensors (damaged)")
    meta = ModelMeta.from_dict(payload["meta"], str(path))
    training = payload.get("training", {})
    return Checkpoint(
        path=path,
        state_dict=payload["state_dict"],
        meta=meta,
        training=training if isinstance(training, dict) else {},
    )


def _bare_state_dict(path: Path, payload: dict[str, Any]) -> Checkpoint:
    """A state dict, possibly in a common wrapper (``state_dict``, ``model``, ...) and with DDP's ``module.``."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(payload):
        bad = next((k for k, v in payload.items() if not isinstance(v, torch.Tensor)), None)
        raise CheckpointError(f"{path}: not a state dict (key {bad!r} is not a tensor)")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in tensors.items()}
    return Checkpoint(path=path, state_dict=state)


def _read_pickle_zip(path: Path) -> Checkpoint:
    payload = _load_weights_only(path)
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path}: expected a dict of tensors or an edgeresnext checkpoint, got {type(payload).__name__}"
        )
    if payload.get("format") == FORMAT:
        return _own_checkpoint(path, payload)
    return _bare_state_dict(path, payload)


ACCEPTED = (
    "accepted: a .safetensors file (ours, or a bare state dict with model.arch), a PyTorch .pt/.pth file "
    "(torch.save's zip or legacy pickle) holding a state dict or our checkpoint, or shipped:fashion-mnist"
)


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read weights and metadata without building a model."""
    import stat

    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint file; {ACCEPTED}") from err
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err}); {ACCEPTED}") from err
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{path}: a folder, not a checkpoint file; {ACCEPTED}")
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path}: not a regular file (a device, pipe or socket), not a checkpoint; {ACCEPTED}")
    if info.st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint; {ACCEPTED}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if path.suffix == ".safetensors" or (head[:1] != b"P" and not head.startswith(b"\x80")):
        return _read_safetensors(path)
    return _read_pickle_zip(path)


def _check_keys(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor], arch: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:5])})")
        raise CheckpointError(f"{path}: weights do not fit {arch}: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            hint = ""
            if key == "fc.weight":
                hint = f" (the checkpoint has num_classes={state[key].shape[0]})"
            elif key == "conv1.weight":
                hint = f" (the checkpoint has in_channels={state[key].shape[1]})"
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, {arch} expects {tuple(tensor.shape)}{hint}"
            )


def infer_shape_kwargs(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """num_classes and in_channels as the weights say (for bare state dicts)."""
    kwargs = {}
    if "fc.weight" in state:
        kwargs["num_classes"] = int(state["fc.weight"].shape[0])
    if "conv1.weight" in state:
        kwargs["in_channels"] = int(state["conv1.weight"].shape[1])
    return kwargs


def load_checkpoint(path: str | os.PathLike[str], arch: str | None = None, **kwargs: Any) -> torch.nn.Module:
    """Build the model a checkpoint describes and load its weights strictly; returns it in eval mode.

    ``arch`` is required for bare state dicts; ``num_classes``/``in_channels`` in ``kwargs`` must agree
    with the weights. The :class:`ModelMeta` (if any) is attached as ``model.meta``.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt.meta
    if meta is not None:
        if arch is not None and arch != meta.arch:
            raise CheckpointError(f"{ckpt.path}: checkpoint is {meta.arch!r}, not the requested {arch!r}")
        arch = meta.arch
        build = {"num_classes": meta.num_classes, "in_channels": meta.in_channels}
    else:
        if arch is None:
            raise CheckpointError(
                f"{ckpt.path}: a bare state dict does not name its architecture; pass arch= "
                f"(one of: {', '.join(list_archs())})"
            )
        build = infer_shape_kwargs(ckpt.state_dict)
    for key, value in kwargs.items():
        if key in build and build[key] != value:
            raise CheckpointError(f"{ckpt.path}: {key}={value} was requested but the checkpoint has {key}={build[key]}")
        build[key] = value
    model = create(arch, **build)
    state = dict(ckpt.state_dict)
    for key, buffer in model.state_dict().items():
        # State dicts saved before PyTorch 0.4.1 (and some converters) have no BatchNorm step counter; it
        # only matters for momentum=None BatchNorm, so it starts at 0 like PyTorch's own loader does.
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(buffer)
    _check_keys(ckpt.path, model, state, arch)
    model.load_state_dict(state, strict=True)
    model.eval()
    if meta is None:
        meta = ModelMeta(
            arch=arch,
            num_classes=build.get("num_classes", model.num_classes),
            in_channels=build.get("in_channels", model.in_channels),
        )
    model.meta = meta
    logger.info(
        "loaded %s (%s, %d classes) from %s",
        arch,
        "with metadata" if ckpt.meta else "bare",
        meta.num_classes,
        ckpt.path,
    )
    return model
