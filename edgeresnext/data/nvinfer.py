"""What DeepStream's ``nvinfer`` does to a frame (or a detector's object) before the engine sees it, emulated on the
host, so that the validation images can be scored through it and compared with the bundle's own preprocessing.

From NVIDIA's Gst-nvinfer documentation and sources (see ``docs/serving.md``): the frame or object crop is
**stretched** to the network's input size (no center crop), or with ``maintain-aspect-ratio=1`` scaled to fit inside it
and padded with black, right and bottom or, with ``symmetric-padding=1``, on both sides
(``gstnvinfer.cpp``, ``get_converted_buffer``: the crop's width and height rounded down to even numbers, the scaled size
truncated to whole pixels, offsets ``(network - scaled) // 2``). The ``scaling-filter`` interpolation is 0 nearest or
1 bilinear (the default on the GPU is nearest); the pixels are converted to ``model-color-format`` (0 RGB, 1 BGR,
2 GRAY), then ``y = net-scale-factor * (x - offsets[c])`` on 0-255 pixels, one scalar scale for every channel.

The filters here use pixel centres (``src = (dst + 0.5) * scale - 0.5``) and no antialiasing, as GPU texture and NPP
resizes do; the device's exact rounding may differ by a pixel's share, which the measured figures cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgeresnext.data.preprocess import Preprocess, to_mode
from edgeresnext.errors import ConfigError

FILTERS = {"nearest": 0, "bilinear": 1}  # nvinfer's scaling-filter values
COLOR_FORMATS = {"RGB": 0, "BGR": 1, "L": 2}  # nvinfer's model-color-format values (2 is GRAY)


def closest_scale(std: tuple[float, ...]) -> float:
    """The one std a scalar net-scale-factor can stand for: the midpoint of the smallest and largest, which makes the
    worst channel's relative error as small as it can be (ImageNet: 0.2265, within 1.1 % of each channel's)."""
    return (min(std) + max(std)) / 2


@dataclass(frozen=True)
class NvinferPreprocess:
    """nvinfer's preprocessing for a model whose bundle preprocesses as ``preprocess``.

    ``normalization``: ``in_model`` (the engine takes 0-255 pixels and normalizes per channel itself: net-scale-factor
    1, offsets 0) or ``scalar`` (net-scale-factor ``1 / (255 * closest_scale(std))``, offsets ``255 * mean``).
    ``color``: the order nvinfer feeds (``RGB``, ``BGR`` or ``L``). ``maintain_aspect_ratio``: scale to fit and pad
    with black (``symmetric_padding``: on both sides, else right and bottom) instead of stretching.
    """

    preprocess: Preprocess
    size: tuple[int, int]  # (height, width) of the network input
    scaling_filter: Literal["nearest", "bilinear"] = "nearest"
    normalization: Literal["in_model", "scalar"] = "in_model"
    color: str = "RGB"
    maintain_aspect_ratio: bool = False
    symmetric_padding: bool = False

    def __post_init__(self) -> None:
        if self.scaling_filter not in FILTERS:
            raise ConfigError(f"scaling filter {self.scaling_filter!r}; expected one of {', '.join(FILTERS)}")
        if self.normalization not in ("in_model", "scalar"):
            raise ConfigError(f"normalization {self.normalization!r}; expected in_model or scalar")
        if self.color not in COLOR_FORMATS:
            raise ConfigError(f"color format {self.color!r}; expected one of {', '.join(COLOR_FORMATS)}")

    @property
    def net_scale_factor(self) -> float:
        return 1.0 if self.normalization == "in_model" else 1.0 / (255.0 * closest_scale(self.preprocess.std))

    @property
    def offsets(self) -> list[float]:
        return [0.0] * len(self.preprocess.mean) if self.normalization == "in_model" else self._mean255

    @property
    def _mean255(self) -> list[float]:
        return [255.0 * m for m in self.preprocess.mean]

    def stretch(self, pixels: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 HWC pixels stretched to ``size`` (default: the network size) (float32, not rounded: nvinfer scales
        into float)."""
        height, width = size or self.size
        array = pixels.astype(np.float32)
        rows = _sample(array.shape[0], height, self.scaling_filter)
        cols = _sample(array.shape[1], width, self.scaling_filter)
        return _apply(_apply(array, rows, axis=0), cols, axis=1)

    def scaled_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the crop is scaled to: the network size, or with ``maintain_aspect_ratio`` the largest
        size of the crop's aspect ratio inside it (nvinfer's arithmetic: double, truncated)."""
        net_height, net_width = self.size
        if not self.maintain_aspect_ratio:
            return net_height, net_width
        fitted_height = net_width * height / width
        if fitted_height <= net_height:
            return max(1, int(fitted_height)), net_width
        return net_height, max(1, int(net_height * width / height))

    def geometry(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 HWC pixels (a frame or an object's crop) to the network size as nvinfer places them: the crop cut
        to even width and height, scaled (stretched, or fitted and padded with black)."""
        pixels = pixels[: max(2, pixels.shape[0] // 2 * 2), : max(2, pixels.shape[1] // 2 * 2)]
        height, width = self.scaled_size(pixels.shape[0], pixels.shape[1])
        scaled = self.stretch(pixels, (height, width))
        if (height, width) == self.size:
            return scaled
        net_height, net_width = self.size
        top, left = ((net_height - height) // 2, (net_width - width) // 2) if self.symmetric_padding else (0, 0)
        placed = np.zeros((net_height, net_width, pixels.shape[2]), np.float32)
        placed[top : top + height, left : left + width] = scaled
        return placed

    def image_to_array(self, image: Any) -> np.ndarray:
        """A PIL image (a frame or an object's crop) or uint8 HW/HWC array to the float32 CHW tensor the model sees."""
        from PIL import Image

        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        pixels = np.asarray(to_mode(image, self.preprocess.channels))
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.color == "BGR":
            pixels = pixels[:, :, ::-1]
        x = self.geometry(pixels)
        if self.normalization == "in_model":  # the engine's first layers: (x / 255 - mean) / std per channel
            mean = np.asarray(self.preprocess.mean, np.float32)
            std = np.asarray(self.preprocess.std, np.float32)
            y = (x / np.float32(255.0) - mean) / std
        else:
            y = np.float32(self.net_scale_factor) * (x - np.asarray(self._mean255, np.float32))
        return np.ascontiguousarray(y.transpose(2, 0, 1), dtype=np.float32)


def _sample(source: int, dest: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two source indices and the weight of the second (pixel-centre mapping)."""
    centre = (np.arange(dest, dtype=np.float64) + 0.5) * (source / dest)
    if kind == "nearest":
        index = np.minimum(np.floor(centre).astype(np.int64), source - 1)
        return index, index, np.zeros(dest, np.float32)
    position = np.clip(centre - 0.5, 0, source - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def _apply(array: np.ndarray, sampling: tuple[np.ndarray, np.ndarray, np.ndarray], axis: int) -> np.ndarray:
    low, high, weight = sampling
    shape = [1, 1, 1]
    shape[axis] = -1
    weight = weight.reshape(shape)
    return np.take(array, low, axis=axis) * (1 - weight) + np.take(array, high, axis=axis) * weight
