"""DeepStream's ``nvinfer`` preprocessing measured on the validation set: the report's "DeepStream preprocessing"
section, which every choice of a Jetson bundle's ``deepstream/`` configs comes from.

nvinfer cannot run the bundle's preprocessing (resize, center crop, per-channel normalization): it stretches the frame
or object to the network size (or fits and pads it), with one scaling filter and one scalar ``net-scale-factor``, and
its default classifier parser compares ``classifier-threshold`` with the raw output (no softmax). So the build scores
the validation images through an emulation of nvinfer (:mod:`edgeresnext.data.nvinfer`) with the FP32 model, and each
setting of the configs is the one that agrees best (same top-1 class) with the bundle's own preprocessing:

- ``scaling-filter`` and ``maintain-aspect-ratio`` / ``symmetric-padding``: every filter (nearest, bilinear) with every
  geometry (stretched; fitted and padded with black on both sides, or right and bottom), normalization in the engine;
  the best agreement, bilinear (the bundle's own resize filter) and then stretched (nvinfer's default) on a tie;
- ``net-scale-factor`` / ``offsets``: the normalization in the engine (exact per channel), shown against the closest
  scalar ``net-scale-factor`` where the channels' std differ;
- ``model-color-format``: the model's channel order, shown against the other one (RGB models);
- a Softmax in the engine with ``classifier-threshold=0.0``, shown against the engine's logits through nvinfer's
  default parser: it keeps a class only if its output is above the threshold and above a running maximum that starts
  at 0 (``ClassifyPostprocessor::parseAttributesFromSoftmaxLayers``, NVIDIA/DeepStream,
  ``src/utils/nvdsinfer/nvdsinfer_context_impl_output_parsing.cpp``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnext.data.nvinfer import COLOR_FORMATS, FILTERS, NvinferPreprocess, closest_scale
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.data.validation import ValidationImages

# What the section measures, in the validate stage's hash: a change reruns the stage of every build.
DEEPSTREAM_MEASURE = "filters x geometries, scalar, color, logits parser (1)"
BUNDLE_ROW = "bundle preprocessing (resize, center crop)"
THRESHOLD = 0.0  # classifier-threshold in the configs: a probability once the engine ends in a Softmax
BATCH = 32  # images per model call
COLOR_NAMES = {"RGB": "RGB", "BGR": "BGR", "L": "GRAY"}  # nvinfer's words for model-color-format 0, 1, 2
GEOMETRIES = {  # name -> (maintain-aspect-ratio, symmetric-padding)
    "stretch": (False, False),
    "pad-symmetric": (True, True),
    "pad-right-bottom": (True, False),
}


@dataclass(frozen=True)
class NvinferRow:
    """One way nvinfer could preprocess (and parse) the validation images, scored with the FP32 model: ``correct``
    images whose label it gets, ``agree`` images whose top-1 class equals the bundle's own preprocessing's,
    ``unclassified`` images for which nvinfer's parser keeps no class at all."""

    name: str
    images: int
    correct: int
    agree: int
    scaling_filter: str | None = None
    geometry: str | None = None
    normalization: str | None = None
    color: str | None = None
    output: str | None = None  # "softmax" (the engine's Softmax) | "logits" (no Softmax: nvinfer's parser on logits)
    unclassified: int = 0

    @property
    def top1(self) -> float:
        return self.correct / self.images if self.images else 0.0

    @property
    def agreement(self) -> float:
        return self.agree / self.images if self.images else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top1": self.top1, "agreement": self.agreement}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NvinferRow:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class NvinferChoice:
    """One setting of the configs (``setting``: the config lines), the row it runs as (``chosen``), the rows it was
    measured against (``against``) and the rule that picked it (``rule``)."""

    setting: str
    chosen: str
    against: list[str]
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeepStreamPreprocessing:
    """The report's DeepStream section: what the configs set and the measured rows that chose it."""

    images: int
    network_size: tuple[int, int]  # (height, width)
    scaling_filter: str
    geometry: str
    color: str
    closest_scalar_std: float
    rows: list[NvinferRow]
    choices: list[NvinferChoice]
    normalization: str = "in_model"
    softmax: bool = True
    threshold: float = THRESHOLD
    scored_with: str = "the FP32 ONNX model in ONNX Runtime"

    @property
    def maintain_aspect_ratio(self) -> bool:
        return GEOMETRIES[self.geometry][0]

    @property
    def symmetric_padding(self) -> bool:
        return GEOMETRIES[self.geometry][1]

    def row(self, name: str) -> NvinferRow:
        return next(r for r in self.rows if r.name == name)

    def choice_text(self, choice: NvinferChoice) -> str:
        """``scaling-filter=1 (bilinear): agreement 97.52 % (118/121); against nvinfer: ...: agreement 96.69 %
        (117/121) (the rule)``."""
        said = f"{choice.setting}: {_agreement(self.row(choice.chosen))}"
        against = "; ".join(f"{r.name}: {_agreement(r)}" for r in map(self.row, choice.against))
        return f"{said}; against {against} ({choice.rule})" if against else f"{said} ({choice.rule})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "network_size": list(self.network_size),
            "scored_with": self.scored_with,
            "scaling_filter": self.scaling_filter,
            "geometry": self.geometry,
            "maintain_aspect_ratio": self.maintain_aspect_ratio,
            "symmetric_padding": self.symmetric_padding,
            "color": self.color,
            "normalization": self.normalization,
            "softmax": self.softmax,
            "threshold": self.threshold,
            "closest_scalar_std": self.closest_scalar_std,
            "rows": [r.to_dict() for r in self.rows],
            "choices": [c.to_dict() for c in self.choices],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeepStreamPreprocessing:
        plain = ("images", "scaling_filter", "geometry", "color", "closest_scalar_std", "normalization", "softmax")
        return cls(
            **{k: data[k] for k in plain},
            network_size=(int(data["network_size"][0]), int(data["network_size"][1])),
            threshold=float(data["threshold"]),
            scored_with=data["scored_with"],
            rows=[NvinferRow.from_dict(r) for r in data["rows"]],
            choices=[NvinferChoice(**c) for c in data["choices"]],
        )


def _agreement(row: NvinferRow) -> str:
    return f"agreement {100 * row.agreement:.2f} % ({row.agree}/{row.images})"


def nvinfer_classifier_top1(outputs: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """The class nvinfer's default classifier parser keeps for each row of ``outputs`` (-1: none): the largest output
    above ``threshold``, compared with a running maximum that starts at 0 (a row whose outputs are all <= 0 keeps
    none; the first of equal maxima wins, as the parser's strict ``>`` does)."""
    outputs = np.asarray(outputs, np.float32)
    best = np.full(len(outputs), -1, np.int64)
    running = np.zeros(len(outputs), np.float32)
    for c in range(outputs.shape[1]):
        keep = (outputs[:, c] > threshold) & (outputs[:, c] > running)
        best[keep] = c
        running[keep] = outputs[keep, c]
    return best


class _Scorer:
    """Scores preprocessing variants of the validation images with the FP32 model, a batch of images at a time (each
    image decoded once per pass): per variant, the top-1 class and the class nvinfer's parser keeps."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], images: ValidationImages, preprocess: Preprocess):
        self.run, self.images, self.preprocess = run, images, preprocess
        self.kept: list[int] = []  # images the bundle's preprocessing takes (the validation set's)
        self.reference = np.zeros(0, np.int64)

    def first_pass(self, variants: dict[str, NvinferPreprocess]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The reference (the bundle's preprocessing) and ``variants``, on every image the bundle's preprocessing
        takes; an image it refuses is left out, as the validation set leaves it out."""
        from edgeresnext.errors import DataError

        inputs: dict[str, list[np.ndarray]] = {BUNDLE_ROW: [], **{name: [] for name in variants}}
        tops: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in inputs}
        for index in range(len(self.images)):
            try:
                image = self.images.image(index)
                inputs[BUNDLE_ROW].append(self.preprocess.image_to_array(image))
            except DataError:
                continue
            self.kept.append(index)
            for name, emulated in variants.items():
                inputs[name].append(emulated.image_to_array(image))
            if len(self.kept) % BATCH == 0:
                self._flush(inputs, tops)
        self._flush(inputs, tops)
        scored = {
            name: (np.concatenate([t for t, _ in part]), np.concatenate([p for _, p in part]))
            for name, part in tops.items()
        }
        self.reference = scored.pop(BUNDLE_ROW)[0]
        return scored

    def second_pass(self, variants: dict[str, NvinferPreprocess]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``variants`` on the images the first pass kept."""
        inputs: dict[str, list[np.ndarray]] = {name: [] for name in variants}
        tops: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in variants}
        for count, index in enumerate(self.kept, start=1):
            image = self.images.image(index)
            for name, emulated in variants.items():
                inputs[name].append(emulated.image_to_array(image))
            if count % BATCH == 0:
                self._flush(inputs, tops)
        self._flush(inputs, tops)
        return {
            name: (np.concatenate([t for t, _ in part]), np.concatenate([p for _, p in part]))
            for name, part in tops.items()
        }

    def _flush(self, inputs: dict[str, list[np.ndarray]], tops: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:
        # Variants that give a batch the very same input share one run (images at the network size: every geometry
        # and filter is the identity there), which keeps a 10,000-image set from costing seven model passes.
        seen: list[tuple[np.ndarray, np.ndarray]] = []
        for name, batch in inputs.items():
            if batch:
                stacked = np.stack(batch)
                outputs = next((out for done, out in seen if np.array_equal(done, stacked)), None)
                if outputs is None:
                    outputs = self.run(stacked)
                    seen.append((stacked, outputs))
                tops[name].append((outputs.argmax(1), nvinfer_classifier_top1(outputs)))
                batch.clear()

    def row(self, name: str, top: np.ndarray, **settings: Any) -> NvinferRow:
        labels = self.images.labels[self.kept]
        return NvinferRow(
            name=name,
            images=len(top),
            correct=int((top == labels).sum()),
            agree=int((top == self.reference).sum()),
            unclassified=int((top < 0).sum()),
            **settings,
        )


def _name(emulated: NvinferPreprocess, geometry: str) -> str:
    normalization = "in the engine" if emulated.normalization == "in_model" else "closest scalar net-scale-factor"
    return f"nvinfer: {geometry}, {emulated.scaling_filter}, normalization {normalization}, {emulated.color}"


def _settings(emulated: NvinferPreprocess, geometry: str) -> dict[str, Any]:
    return {
        "scaling_filter": emulated.scaling_filter,
        "geometry": geometry,
        "normalization": emulated.normalization,
        "color": emulated.color,
    }


def measure_deepstream(
    fp32_onnx: str | Path,
    images: ValidationImages,
    preprocess: Preprocess,
    threads: int | None = None,
) -> DeepStreamPreprocessing:
    """Every choice of the DeepStream configs measured on the validation ``images`` with the FP32 ONNX model, at its
    input's height and width (the network size nvinfer scales to). The first pass scores every scaling filter with
    every geometry and picks the pair with the best agreement (ties: bilinear, then stretched); the second scores what
    the configs rule out with that pair (the closest scalar net-scale-factor, the other color order). See the module
    docstring."""
    from edgeresnext.onnx_io import ort_session

    session = ort_session(fp32_onnx, threads, "all")
    name, shape = session.get_inputs()[0].name, session.get_inputs()[0].shape
    scorer = _Scorer(lambda batch: session.run(None, {name: batch})[0], images, preprocess)
    base = NvinferPreprocess(preprocess, (int(shape[-2]), int(shape[-1])), color=preprocess.channels)
    grid = {
        (f, g): replace(
            base, scaling_filter=f, maintain_aspect_ratio=GEOMETRIES[g][0], symmetric_padding=GEOMETRIES[g][1]
        )
        for f in FILTERS
        for g in GEOMETRIES
    }
    first = scorer.first_pass({_name(e, g): e for (_, g), e in grid.items()})
    rows = [scorer.row(BUNDLE_ROW, scorer.reference)]
    by_pair = {}
    for (f, g), emulated in grid.items():
        by_pair[f, g] = scorer.row(
            _name(emulated, g), first[_name(emulated, g)][0], output="softmax", **_settings(emulated, g)
        )
        rows.append(by_pair[f, g])
    order = list(GEOMETRIES)
    chosen_filter, geometry = max(by_pair, key=lambda fg: (by_pair[fg].agree, fg[0] == "bilinear", -order.index(fg[1])))
    chosen, best = by_pair[chosen_filter, geometry], grid[chosen_filter, geometry]
    logits_row = scorer.row(
        f"{chosen.name}; no Softmax: the engine's logits through nvinfer's parser, classifier-threshold={THRESHOLD}",
        first[chosen.name][1],
        output="logits",
        **_settings(best, geometry),
    )
    ruled_out = {}
    if len(set(preprocess.std)) > 1:
        ruled_out["scalar"] = replace(best, normalization="scalar")
    if preprocess.channels == "RGB":
        ruled_out["color"] = replace(best, color="BGR")
    second = scorer.second_pass({_name(e, geometry): e for e in ruled_out.values()})
    extra = {
        k: scorer.row(_name(e, geometry), second[_name(e, geometry)][0], output="softmax", **_settings(e, geometry))
        for k, e in ruled_out.items()
    }
    rows += [*extra.values(), logits_row]
    return DeepStreamPreprocessing(
        images=len(scorer.kept),
        network_size=base.size,
        scaling_filter=chosen_filter,
        geometry=geometry,
        color=preprocess.channels,
        closest_scalar_std=closest_scale(preprocess.std),
        rows=rows,
        choices=_choices(chosen, by_pair, extra, logits_row, preprocess),
    )


def _choices(
    chosen: NvinferRow,
    by_pair: dict[tuple[str, str], NvinferRow],
    extra: dict[str, NvinferRow],
    logits_row: NvinferRow,
    preprocess: Preprocess,
) -> list[NvinferChoice]:
    """Each setting of the configs with the row it runs as and the rows it was measured against (the same setting
    changed, everything else as chosen)."""
    keep, symmetric = GEOMETRIES[chosen.geometry]
    aspect = f"maintain-aspect-ratio={int(keep)}" + (f", symmetric-padding={int(symmetric)}" if keep else "")
    uniform = len(set(preprocess.std)) == 1
    return [
        NvinferChoice(
            f"scaling-filter={FILTERS[chosen.scaling_filter]} ({chosen.scaling_filter})",
            chosen.name,
            [r.name for (f, g), r in by_pair.items() if g == chosen.geometry and f != chosen.scaling_filter],
            "the best agreement of every filter and geometry; bilinear, the bundle's own resize filter, on a tie",
        ),
        NvinferChoice(
            f"{aspect} ({chosen.geometry})",
            chosen.name,
            [r.name for (f, g), r in by_pair.items() if f == chosen.scaling_filter and g != chosen.geometry],
            "the best agreement; stretched, nvinfer's default, on a tie; nvinfer has no center crop",
        ),
        NvinferChoice(
            "net-scale-factor=1.0, offsets=0 (the normalization in the engine: it takes 0-255 pixels)",
            chosen.name,
            [extra["scalar"].name] if "scalar" in extra else [],
            "one std for every channel: a scalar would be exact too; the engine variant carries the Softmax anyway"
            if uniform
            else "exact per channel; one scalar net-scale-factor cannot divide each channel by its own std",
        ),
        NvinferChoice(
            f"model-color-format={COLOR_FORMATS[preprocess.channels]} ({COLOR_NAMES[preprocess.channels]})",
            chosen.name,
            [extra["color"].name] if "color" in extra else [],
            "the model's own channel order",
        ),
        NvinferChoice(
            f"a Softmax at the end of the engine, classifier-threshold={THRESHOLD}",
            chosen.name,
            [logits_row.name],
            "nvinfer's parser applies no softmax and keeps a class only above the threshold and above a running "
            "maximum that starts at 0; on probabilities, threshold 0 keeps every top-1",
        ),
    ]
