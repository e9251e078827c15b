"""The ResNeXt family, written against torchvision's parameter names.

Two topologies share one bottleneck block:

* ``imagenet``: 7x7/2 stem + max-pool, four stages (torchvision's ``ResNet`` with ``groups`` and
  ``width_per_group``); a torchvision checkpoint loads with ``strict=True``.
* ``cifar``: 3x3/1 stem, no pool, three stages (Xie et al. 2017, section 5.3 "ResNeXt-29"), used for
  small inputs such as CIFAR-10 (32x32) and Fashion-MNIST (28x28).

The bottleneck width of a stage is ``int(planes * width_per_group / 64) * groups`` exactly as in
torchvision, so ``resnext50_32x4d`` means 32 groups of 4 channels in the first stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgeresnext.models.registry import register_model

__all__ = ["Bottleneck", "ResNeXt", "ResNeXtConfig"]


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 grouped, 1x1 expand; names match ``torchvision.models.resnet.Bottleneck``."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNeXtConfig:
    """Everything that fixes a ResNeXt's shape (and so its state-dict keys and sizes)."""

    layers: tuple[int, ...]
    groups: int
    width_per_group: int
    stem: str = "imagenet"  # "imagenet" (7x7/2 + maxpool) or "cifar" (3x3/1)
    planes: tuple[int, ...] = field(default=(64, 128, 256, 512))
    stem_width: int = 64

    def group_channels(self) -> list[int]:
        """Channels per group of each stage's grouped 3x3 convolution (TensorRT INT8 wants multiples of 4)."""
        return [int(p * (self.width_per_group / 64.0)) for p in self.planes]


class ResNeXt(nn.Module):
    """A ResNeXt classifier; ``in_channels`` and ``num_classes`` are free, the rest comes from the config."""

    def __init__(self, config: ResNeXtConfig, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        if len(config.layers) != len(config.planes):
            raise ValueError(f"layers {config.layers} and planes {config.planes} differ in length")
        self.config = config
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.inplanes = config.stem_width
        self.groups = config.groups
        self.base_width = config.width_per_group
        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        elif config.stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            raise ValueError(f"unknown stem {config.stem!r}; expected 'imagenet' or 'cifar'")
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if config.stem == "imagenet" else nn.Identity()
        )
        for index, (planes, blocks) in enumerate(zip(config.planes, config.layers, strict=True)):
            stride = 1 if index == 0 else 2
            setattr(self, f"layer{index + 1}", self._make_layer(planes, blocks, stride))
        self.num_stages = len(config.layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(config.planes[-1] * Bottleneck.expansion, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [
            Bottleneck(self.inplanes, planes, groups=self.groups, base_width=self.base_width) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero-init the last BN of each residual branch: each block starts as identity, which trains
        # small edge models faster and more stably (Goyal et al. 2017).
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


_IMAGENET = dict(stem="imagenet", planes=(64, 128, 256, 512), stem_width=64)
_CIFAR = dict(stem="cifar", planes=(64, 128, 256), stem_width=64)
# Edge variants: the CIFAR topology at a quarter of the planes, sized to train on two CPU cores.
# Channels per group stay multiples of 4 (8, 16, 32) so TensorRT can run the grouped convs in INT8.
_EDGE = dict(stem="cifar", planes=(16, 32, 64), stem_width=32)

ARCHS: dict[str, ResNeXtConfig] = {
    "resnext50_32x4d": ResNeXtConfig(layers=(3, 4, 6, 3), groups=32, width_per_group=4, **_IMAGENET),
    "resnext101_32x8d": ResNeXtConfig(layers=(3, 4, 23, 3), groups=32, width_per_group=8, **_IMAGENET),
    "resnext101_64x4d": ResNeXtConfig(layers=(3, 4, 23, 3), groups=64, width_per_group=4, **_IMAGENET),
    "resnext29_8x64d": ResNeXtConfig(layers=(3, 3, 3), groups=8, width_per_group=64, **_CIFAR),
    "resnext29_16x64d": ResNeXtConfig(layers=(3, 3, 3), groups=16, width_per_group=64, **_CIFAR),
    "resnext29_4x16d": ResNeXtConfig(layers=(3, 3, 3), groups=4, width_per_group=16, **_CIFAR),
    "resnext11_4x8d": ResNeXtConfig(layers=(1, 1, 1), groups=4, width_per_group=32, **_EDGE),
    "resnext20_4x8d": ResNeXtConfig(layers=(2, 2, 2), groups=4, width_per_group=32, **_EDGE),
}
"""Registered architectures. For the edge variants the name's ``4x8d`` is groups x channels-per-group
of the first stage (width_per_group is expressed against torchvision's 64-plane convention)."""

_DEFAULT_CLASSES = {"imagenet": 1000, "cifar": 10}


def _make_factory(arch: str, config: ResNeXtConfig):
    def factory(num_classes: int | None = None, in_channels: int = 3) -> ResNeXt:
        classes = num_classes if num_classes is not None else _DEFAULT_CLASSES[config.stem]
        return ResNeXt(config, num_classes=classes, in_channels=in_channels)

    factory.__name__ = arch
    factory.__doc__ = (
        f"{arch}: layers={config.layers}, groups={config.groups}, channels/group={config.group_channels()}"
    )
    return factory


for _arch, _config in ARCHS.items():
    register_model(_arch)(_make_factory(_arch, _config))
