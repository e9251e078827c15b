"""The weights shipped inside the package, and how a checkpoint name becomes a file path."""

from __future__ import annotations

from pathlib import Path

from edgeresnext.errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = {"fashion-mnist": "fashion_mnist_resnext20_4x8d.safetensors"}
PREFIX = "shipped:"


def resolve_checkpoint(spec: str) -> Path:
    """``shipped:<name>`` to the packaged weights file; anything else is a path."""
    if spec.startswith(PREFIX):
        name = spec.split(":", 1)[1]
        if name not in SHIPPED:
            raise CheckpointError(
                f"unknown shipped model {name!r}; expected one of: " + ", ".join(f"{PREFIX}{k}" for k in SHIPPED)
            )
        path = WEIGHTS_DIR / SHIPPED[name]
        if not path.is_file():
            raise CheckpointError(
                f"{path}: the shipped model is missing from this installation; run `make train` to recreate it"
            )
        return path
    return Path(spec)
