"""DeepStream on the Jetson: the ``deepstream/`` folder of a Jetson bundle, an ``nvinfer`` classifier for the engine
the device step builds.

nvinfer cannot reproduce the bundle's preprocessing by configuration: its ``net-scale-factor`` is one scalar (ImageNet
normalizes each channel by its own std), it has no center crop, and its default classifier parser compares
``classifier-threshold`` with the raw output and applies no softmax (a logit below 0 is never chosen). So the engine
DeepStream runs is a variant, built by the device step beside the primary one from the same ONNX: the normalization
moved inside (it takes 0-255 pixels; net-scale-factor 1, offsets 0) and a Softmax at the end (the threshold is a
probability). What remains, nvinfer's geometry (stretched or fitted to the network size) and its scaling filter, is
measured by the validate stage (:mod:`edgeresnext.validate.deepstream`, the report's DeepStream section); the configs
written here take each setting from that section. Sources: NVIDIA's Gst-nvinfer documentation and the nvinfer
sources (DeepStream repository), as listed in :data:`NVINFER_KEYS_SOURCE`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.data.nvinfer import COLOR_FORMATS, FILTERS
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.validate.deepstream import DeepStreamPreprocessing

if TYPE_CHECKING:
    from edgeresnext.backends import Backend

logger = logging.getLogger(__name__)

FOLDER = "deepstream"
VARIANT_ONNX = "model.deepstream.onnx"  # in the kit, beside the ONNX the engine is built from
VARIANT_ENGINE = "model.deepstream.engine"
OUTPUT = "probabilities"
CONFIGS = {"primary": "config_infer_primary.txt", "secondary": "config_infer_secondary.txt"}
LABELS = "labels.txt"
MEASURED = "preprocessing.json"
# The [property] keys nvinfer reads: the CONFIG_GROUP_INFER_* names of gstnvinfer_property_parser.h (NVIDIA/DeepStream,
# src/gst-plugins/gst-nvinfer/, commit 2afbef048bf2), the parser behind the Gst-nvinfer documentation's key table.
NVINFER_KEYS_SOURCE = "NVIDIA/DeepStream src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h (2afbef048bf2)"
NVINFER_KEYS = frozenset(
    """gie-unique-id process-mode interval labelfile-path gpu-id secondary-reinfer-interval output-tensor-meta
    disable-output-host-copy auto-inc-mem max-gpu-mem-per enable-dla use-dla-core dump-input-tensor dump-output-tensor
    overwrite-input-tensor overwrite-output-tensor ip-tensor-file op-tensor-files raw-output-file-write batch-size
    tensor-meta-pool-size network-mode model-engine-file int8-calib-file workspace-size output-blob-names is-classifier
    network-type force-implicit-batch-dim infer-dims output-io-formats layer-device-precision model-color-format
    net-scale-factor offsets mean-file maintain-aspect-ratio symmetric-padding scaling-filter scaling-compute-hw
    network-input-order input-tensor-from-meta custom-lib-path parse-bbox-func-name parse-bbox-instance-mask-func-name
    parse-segmentation-func-name engine-create-func-name parse-classifier-func-name custom-network-config model-file
    proto-file uff-file uff-input-order input-dims uff-input-dims uff-input-blob-name tlt-encoded-model tlt-model-key
    onnx-file num-detected-classes enable-dbscan cluster-mode crop-objects-to-roi-boundary strongly-typed
    dynamic-properties warmup-engine stabilize-buffer-count classifier-type classifier-threshold classifier-async-mode
    segmentation-threshold segmentation-output-order output-instance-mask input-object-min-width
    input-object-min-height input-object-max-width input-object-max-height operate-on-gie-id operate-on-class-ids
    filter-out-class-ids""".split()
)


def deepstream_onnx(source: str | Path, dest: str | Path, preprocess: Preprocess) -> Path:
    """The engine's ONNX for DeepStream: 0-255 pixels in, ``(x - 255 mean) * 1 / (255 std)`` per channel (the bundle's
    ``(x / 255 - mean) / std``), the model, then Softmax over the classes (output ``probabilities``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeresnext.atomic import atomic_path
    from edgeresnext.onnx_io import load_onnx_safely

    model = load_onnx_safely(source)
    graph = model.graph
    pixels, logits = graph.input[0].name, graph.output[0].name
    normalized = f"{pixels}_normalized"
    for node in graph.node:
        node.input[:] = [normalized if name == pixels else name for name in node.input]
    shape = (1, len(preprocess.mean), 1, 1)
    mean = np.asarray([255.0 * m for m in preprocess.mean], np.float32).reshape(shape)
    scale = np.asarray([1.0 / (255.0 * s) for s in preprocess.std], np.float32).reshape(shape)
    graph.initializer.extend(
        [numpy_helper.from_array(mean, "pixel_mean"), numpy_helper.from_array(scale, "pixel_scale")]
    )
    first = [
        helper.make_node("Sub", [pixels, "pixel_mean"], [f"{pixels}_centred"], name="deepstream_mean"),
        helper.make_node("Mul", [f"{pixels}_centred", "pixel_scale"], [normalized], name="deepstream_scale"),
    ]
    nodes = [*first, *graph.node, helper.make_node("Softmax", [logits], [OUTPUT], axis=1, name="deepstream_softmax")]
    del graph.node[:]
    graph.node.extend(nodes)
    out = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, None)
    out.type.tensor_type.shape.CopyFrom(graph.output[0].type.tensor_type.shape)
    del graph.output[:]
    graph.output.append(out)
    onnx.checker.check_model(model)
    with atomic_path(dest) as tmp:
        onnx.save(model, str(tmp))
    return Path(dest)


def _property_lines(
    plan: dict[str, Any], preprocess: Preprocess, section: DeepStreamPreprocessing, mode: str
) -> list[str]:
    chw = plan["input_chw"]
    lines = [
        "[property]",
        "gpu-id=0",
        "# Each preprocessing setting is the one the validation report measured best (its DeepStream section, and",
        "# preprocessing.json here): nvinfer emulated on the validation images, agreement with the bundle's own.",
        "# The normalization is in the engine (0-255 pixels in): per-channel mean/std, which one scalar cannot do.",
        "net-scale-factor=1.0",
        "offsets=" + ";".join("0" for _ in preprocess.mean),
        f"model-color-format={COLOR_FORMATS[section.color]}",
        "# No center crop in nvinfer: the frame (primary) or object (secondary) is stretched or fitted to infer-dims.",
        f"maintain-aspect-ratio={int(section.maintain_aspect_ratio)}",
        *([f"symmetric-padding={int(section.symmetric_padding)}"] if section.maintain_aspect_ratio else []),
        f"scaling-filter={FILTERS[section.scaling_filter]}",
        f"onnx-file=../kit/{VARIANT_ONNX}",
        f"model-engine-file=../kit/{VARIANT_ENGINE}",
        f"labelfile-path={LABELS}",
        f"infer-dims={';'.join(str(d) for d in chw)}",
        f"batch-size={plan['batch']['max']}",
        f"network-mode={ {'int8': 1, 'fp16': 2, 'fp32': 0}[plan['precision']] }",
        f"strongly-typed={1 if plan['build_mode'] == 'strongly_typed' else 0}",
        "network-type=1",
        f"output-blob-names={OUTPUT}",
        "# the engine ends in a Softmax: the threshold is a probability (0 keeps every object's top-1)",
        f"classifier-threshold={section.threshold}",
    ]
    if mode == "primary":
        return [*lines, "process-mode=1", "gie-unique-id=1"]
    return [
        *lines,
        "process-mode=2",
        "gie-unique-id=2",
        "# the detector's gie-unique-id and the class ids of the objects to classify: set them to your detector's",
        "operate-on-gie-id=1",
        "operate-on-class-ids=0",
        "classifier-async-mode=1",
    ]


def write_deepstream_folder(
    folder: Path,
    plan: dict[str, Any],
    preprocess: Preprocess,
    class_names: list[str],
    section: DeepStreamPreprocessing,
) -> dict[str, Any]:
    """The configs (settings from the report's DeepStream ``section``), labels (one ``;``-separated line: nvinfer's
    classifier format), the measured figures and the README in ``folder``; returns what the manifest records
    (``exports.deepstream``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in class_names:
        if ";" in name:
            from edgeresnext.errors import ConfigError

            raise ConfigError(f"class name {name!r} contains ';', nvinfer's label separator; rename the class")
    for mode, filename in CONFIGS.items():
        text = "\n".join(_property_lines(plan, preprocess, section, mode)) + "\n"
        (folder / filename).write_text(text, encoding="utf-8")
    (folder / LABELS).write_text(";".join(class_names) + "\n", encoding="utf-8")
    (folder / MEASURED).write_text(json.dumps(section.to_dict(), indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_readme(plan, section), encoding="utf-8")
    return {
        "folder": FOLDER,
        "configs": {mode: f"{FOLDER}/{name}" for mode, name in CONFIGS.items()},
        "labels": f"{FOLDER}/{LABELS}",
        "engine": f"kit/{VARIANT_ENGINE}",
        "onnx": f"kit/{VARIANT_ONNX}",
        "normalization": section.normalization,
        "softmax": section.softmax,
        "scaling_filter": section.scaling_filter,
        "geometry": section.geometry,
        "closest_scalar_std": section.closest_scalar_std,
        "measured": [row.to_dict() for row in section.rows],
        "choices": [section.choice_text(choice) for choice in section.choices],
    }


def measured_table(section: DeepStreamPreprocessing) -> str:
    lines = ["| preprocessing | top-1 | agreement with the bundle's |", "|---|---|---|"]
    for r in section.rows:
        lines.append(f"| {r.name} | {100 * r.top1:.2f} % | {100 * r.agreement:.2f} % ({r.agree}/{r.images}) |")
    return "\n".join(lines)


def _readme(plan: dict[str, Any], section: DeepStreamPreprocessing) -> str:
    choices = "\n".join(f"- {section.choice_text(choice)}" for choice in section.choices)
    return f"""# DeepStream nvinfer classifier

`{CONFIGS["primary"]}` classifies whole frames (primary, process-mode=1); `{CONFIGS["secondary"]}` classifies a
detector's objects (secondary, process-mode=2: set operate-on-gie-id and operate-on-class-ids to your detector's).
Both run `../kit/{VARIANT_ENGINE}`, which the device step (`kit/build_engine.sh` or `edgeresnext bundle build-engine`)
builds beside the primary engine from `../kit/{VARIANT_ONNX}`: the bundle's model with its normalization inside
(0-255 pixels in) and a Softmax at the end (classifier-threshold compares probabilities; nvinfer applies no softmax).
Labels: `{LABELS}`, one line, `;`-separated (nvinfer's classifier format).

Run it on the device (JetPack 6.1+, DeepStream 7), from this folder:

    gst-launch-1.0 filesrc location=/opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.h264 ! h264parse ! \\
      nvv4l2decoder ! m.sink_0 nvstreammux name=m batch-size=1 width=1280 height=720 ! \\
      nvinfer config-file-path={CONFIGS["primary"]} ! nvvideoconvert ! nvdsosd ! fakesink

or, in a deepstream-app configuration, `[primary-gie]` (or `[secondary-gie0]`) with `config-file={CONFIGS["primary"]}`.

What nvinfer's preprocessing does, measured by the build's validation (the report's DeepStream section; here in
`{MEASURED}`): {section.images} validation images through an emulation of nvinfer (`edgeresnext/data/nvinfer.py`; the
frame is the image, the network {"x".join(map(str, section.network_size))}), scored with {section.scored_with}:

{measured_table(section)}

Each setting of the configs, the figure that chose it and what it was measured against:

{choices}
"""


def kit_with_deepstream(kit: Path, preprocess: Preprocess, backend: Backend) -> tuple[Path, dict[str, Any]]:
    """Put the DeepStream variant of the kit's ONNX into ``kit`` (a private copy) and have ``backend``'s device step
    build its engine too; returns the variant's path and the kit's build plan."""
    return backend.kit_with_variant(kit, VARIANT_ONNX, lambda source, dest: deepstream_onnx(source, dest, preprocess))
