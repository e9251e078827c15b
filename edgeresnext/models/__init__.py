"""The ResNeXt family, its registry and safe checkpoint loading (imports torch)."""

from edgeresnext.models import resnext as _resnext  # noqa: F401  (fills the registry)
from edgeresnext.models.checkpoints import ModelMeta, load_checkpoint, read_checkpoint, save_checkpoint
from edgeresnext.models.registry import create, list_archs, register_model
from edgeresnext.models.resnext import ARCHS, ResNeXt, ResNeXtConfig

__all__ = [
    "ARCHS",
    "ModelMeta",
    "ResNeXt",
    "ResNeXtConfig",
    "create",
    "list_archs",
    "load_checkpoint",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
