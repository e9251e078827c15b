"""Model registry: an explicit dict filled by a decorator (torchvision's ``register_model``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from edgeresnext.errors import ConfigError

_MODELS: dict[str, Callable[..., object]] = {}

F = TypeVar("F", bound=Callable[..., object])


def register_model(name: str) -> Callable[[F], F]:
    """Register a model factory under a lowercase variant name; a duplicate name raises."""

    def decorator(factory: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        if name != name.lower():
            raise ValueError(f"model names are lowercase variant names, got {name!r}")
        _MODELS[name] = factory
        return factory

    return decorator


def list_archs() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_MODELS)


def get_factory(arch: str) -> Callable[..., object]:
    try:
        return _MODELS[arch]
    except KeyError as err:
        raise ConfigError(f"unknown arch {arch!r}; expected one of: {', '.join(list_archs())}") from err


def create(arch: str, **kwargs: object):
    """Build a fresh (randomly initialised) model: ``create("resnext11_4x8d", num_classes=10, in_channels=1)``."""
    return get_factory(arch)(**kwargs)
