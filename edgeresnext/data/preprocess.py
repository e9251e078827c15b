"""Preprocessing that travels with the model: training, validation, calibration and device runtimes all
call :meth:`Preprocess.image_to_array`, so the pixels a bundle sees are the pixels the model was trained on.

Only numpy and Pillow here (no torch): ``edgeresnext.runtime`` uses it on devices without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeresnext.errors import ConfigError, DataError

_CHANNELS = {"L": 1, "RGB": 3}
# An image whose shorter side must be blown up more than this many times to reach ``resize`` holds next to nothing
# of what the model was trained on (a 1x1 image becomes one flat colour): it is refused, never calibrated on.
MAX_UPSCALE = 8


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor (NCHW float32).

    Order: convert to ``channels`` mode, resize the shorter side to ``resize`` (bilinear; None keeps the size),
    center-crop to ``crop`` (None keeps the size), scale to [0, 1], subtract ``mean``, divide by ``std``.
    """

    channels: str = "RGB"
    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = field(default="NCHW")

    def __post_init__(self) -> None:
        if not isinstance(self.channels, str) or self.channels not in _CHANNELS:
            raise ConfigError(f"preprocess.channels={self.channels!r}; expected one of {sorted(_CHANNELS)}")
        n = _CHANNELS[self.channels]
        if len(self.mean) != n or len(self.std) != n:
            raise ConfigError(
                f"preprocess mean/std need {n} values for channels={self.channels!r}, got {self.mean} / {self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocess.std must be positive, got {self.std}")
        for key in ("resize", "crop"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"preprocess.{key}={value!r}; expected a positive integer or null")
        if self.layout != "NCHW":
            raise ConfigError(f"preprocess.layout={self.layout!r}; only 'NCHW' is supported")

    @property
    def num_channels(self) -> int:
        return _CHANNELS[self.channels]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "preprocess") -> Preprocess:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r}; accepted keys: {', '.join(sorted(known))}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                try:
                    values[key] = tuple(float(v) for v in values[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"{source}: {key}={values[key]!r}; expected a list of numbers") from None
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 HWC (or HW) pixels, already at model size, to float32 CHW."""
        array = np.asarray(pixels, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        array = (array - mean) / std
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def geometry(self, image):
        """Resize and crop a PIL image (no pixel scaling)."""
        from PIL import Image

        if self.resize is not None:
            width, height = image.size
            short = min(width, height)
            if short * MAX_UPSCALE < self.resize:
                least = -(-self.resize // MAX_UPSCALE)
                raise DataError(
                    f"image of {width}x{height} is too small: preprocess.resize={self.resize} would enlarge it more "
                    f"than {MAX_UPSCALE}x; images need a shorter side of at least {least} pixels"
                )
            if short != self.resize:
                scale = self.resize / short
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                image = image.resize(size, Image.BILINEAR)
        if self.crop is not None:
            width, height = image.size
            if width < self.crop or height < self.crop:
                raise DataError(
                    f"image of {width}x{height} is smaller than the crop {self.crop}; set preprocess.resize"
                )
            left = (width - self.crop) // 2
            top = (height - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        return image

    def image_to_array(self, image) -> np.ndarray:
        """A PIL image (any mode) or a uint8 HW/HWC array to the float32 CHW model input."""
        from PIL import Image

        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise DataError(f"image arrays must be uint8 pixels, got {image.dtype}")
            image = Image.fromarray(image)
        image = to_mode(image, self.channels)
        image = self.geometry(image)
        return self.normalize(np.asarray(image))


def to_mode(image, channels: str):
    """Convert any PIL mode (1, P, I;16, RGBA, CMYK, ...) to ``L`` or ``RGB`` predictably."""
    if image.mode == channels:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping (Pillow's convert clips to 255).
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        from PIL import Image

        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        return image if channels == "L" else image.convert(channels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on black, the way the training images (no alpha) look.
        image = image.convert("RGBA")
        from PIL import Image

        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert(channels)
