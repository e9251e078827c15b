"""Everything a build can check before its first stage writes a file: the model's metadata completed (class names,
preprocessing) with where each came from, the validation folder's classes, and the calibration images.

A bare torchvision-format state dict names neither its classes nor its preprocessing. They are taken, in order,
from the target (``model.class_names``: a list or a labels file; ``model.preprocess``), from the data (the
validation folder's class sub-folders sorted as torchvision's ``ImageFolder`` does, its ``preprocess.json``, a named
dataset's own), and for the preprocessing of ImageNet-topology archs from torchvision's ImageNet inference
recipe; every choice is said in the build summary and recorded in the model's metadata, so the report and the
bundle show it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import CheckpointError, ConfigError, DataError, shown
from edgeresnext.models.shipped import resolve_checkpoint

if TYPE_CHECKING:
    from edgeresnext.config import Target
    from edgeresnext.models import ModelMeta

logger = logging.getLogger(__name__)

# torchvision's ImageNet inference preprocessing (``ResNeXt50_32X4D_Weights.IMAGENET1K_V1.transforms()``).
IMAGENET_PREPROCESS = Preprocess(
    channels="RGB", resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


@dataclass
class Preflight:
    """What the checks found: the completed metadata, the calibration images to use, and what to tell the user."""

    meta: ModelMeta
    calibration_images: int = 0
    notes: list[str] = field(default_factory=list)


def preflight(target: Target) -> Preflight:
    """Check the model, its metadata, the validation data and the calibration images; raise before any work."""
    from edgeresnext.models import read_checkpoint
    from edgeresnext.models.checkpoints import infer_shape_kwargs

    source = resolve_checkpoint(target.model.checkpoint)
    checkpoint = read_checkpoint(source)
    notes: list[str] = []
    meta = checkpoint.meta
    if meta is None:
        arch = target.model.arch
        if arch is None:
            raise CheckpointError(
                f"{source}: a bare state dict does not name its architecture; give model.arch (MODEL=... / --model)"
            )
        from edgeresnext.models import ModelMeta

        shapes = infer_shape_kwargs(checkpoint.state_dict)
        meta = ModelMeta(
            arch=arch, num_classes=shapes.get("num_classes", 1000), in_channels=shapes.get("in_channels", 3)
        )
    class_names, names_said = _class_names(target, meta)
    preprocess, preprocess_said = _preprocess(target, meta, checkpoint.meta is not None)
    notes += [said for said in (names_said, preprocess_said) if said]
    if preprocess.num_channels != meta.in_channels:
        raise ConfigError(
            f"{source}: the model takes {meta.in_channels} input channel(s) but the preprocessing gives "
            f"{preprocess.num_channels} ({preprocess.channels}); set model.preprocess.channels"
        )
    size = preprocess.crop or preprocess.resize or meta.input_size
    provenance = dict(meta.provenance)
    for key, said_here in (("class_names", names_said), ("preprocess", preprocess_said)):
        if said_here:
            provenance[key] = said_here.split(": ", 1)[1]
    meta = replace(meta, class_names=class_names, preprocess=preprocess, input_size=size, provenance=provenance)
    result = Preflight(meta=meta, notes=notes)
    _check_validation_data(target, meta)
    if target.precision == "int8":
        result.calibration_images = _check_calibration(target, meta, notes)
    return result


def _class_names(target: Target, meta: ModelMeta) -> tuple[list[str], str | None]:
    """The model's class names and, when they did not come from the checkpoint, where they came from."""
    given = target.model.class_names
    if isinstance(given, str):
        names, origin = read_labels_file(Path(given)), f"{given} (one name per line)"
    elif given:
        names, origin = list(given), "model.class_names"
    elif meta.class_names:
        _check_class_names(list(meta.class_names), f"{target.model.checkpoint}: the checkpoint's class names", True)
        return list(meta.class_names), None
    else:
        names, origin = _class_names_from_data(target)
    if names is None:
        return [f"class_{i}" for i in range(meta.num_classes)], (
            f"class names: the checkpoint has none and the data gives none; using class_0..class_{meta.num_classes - 1}"
            " (give model.class_names or --labels FILE)"
        )
    from_file = isinstance(given, str)
    if len(names) != meta.num_classes:
        # A labels file's lines are never quoted: --labels may name any file, and its text is not ours to print.
        listed = "" if from_file else f" ({', '.join(shown(n) for n in names[:6])}{', ...' if len(names) > 6 else ''})"
        raise ConfigError(
            f"{origin}: {len(names)} class names{listed} but the checkpoint's classifier has {meta.num_classes} "
            "outputs (fc); give model.class_names or --labels FILE with one name per output, in training order"
        )
    _check_class_names(names, origin, quote=not from_file)
    if meta.class_names and meta.class_names != names:
        return names, f"class names: {origin} replaces the checkpoint's ({', '.join(meta.class_names[:4])}, ...)"
    return names, f"class names: {origin}: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"


# A labels file is one short name per line: these bounds refuse a file that is something else, before decoding it.
LABELS_FILE_MAX_BYTES = 4 << 20
CLASS_NAME_MAX = 200


def read_labels_file(path: Path) -> list[str]:
    """The class names in a labels file (one per line; blank lines after the last name ignored): a regular UTF-8
    text file of at most :data:`LABELS_FILE_MAX_BYTES`. A blank line before a name is refused naming its line (the
    names after it would shift by one class). A file that is not one is refused by what it is, never by quoting its
    text."""
    from edgeresnext.config import read_small_text

    what = "a labels file (UTF-8 text, one class name per line, at most 4 MiB)"
    text = read_small_text(path, LABELS_FILE_MAX_BYTES, "labels file", f"model.class_names / --labels takes {what}")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = next((number for number, line in enumerate(lines, start=1) if not line.strip()), None)
    if blank is not None:
        raise ConfigError(
            f"{path}: line {blank} is blank; a labels file has one class name per line, in output order (a blank line "
            "would shift every later name by one class)"
        )
    names = [line.strip() for line in lines]
    for number, name in enumerate(names, start=1):
        if len(name) > CLASS_NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ConfigError(
                f"{path}: name {number} is over {CLASS_NAME_MAX} characters or holds control characters; not {what}"
            )
    return names


def _check_class_names(names: list[str], origin: str, quote: bool) -> None:
    """Each class name becomes one line of the bundle's labels.txt: no line breaks or control characters, no repeats."""
    for index, name in enumerate(names):
        if not name.strip() or len(name) > CLASS_NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in name):
            said = f" {shown(name)}" if quote else ""
            raise ConfigError(
                f"{origin}: class name {index}{said} is empty, over {CLASS_NAME_MAX} characters, or holds a line "
                "break or control character; each name becomes one line of the bundle's labels.txt"
            )
    if len(set(names)) != len(names):
        repeated = next(name for name in names if names.count(name) > 1)
        said = f" ({shown(repeated)} more than once)" if quote else ""
        raise ConfigError(f"{origin}: class names repeat{said}; each output needs its own name")


def _class_names_from_data(target: Target) -> tuple[list[str] | None, str]:
    from edgeresnext.data import DATASETS

    dataset = target.data.dataset
    if dataset in DATASETS:
        from edgeresnext.data import load_dataset

        return list(load_dataset(dataset, split=target.data.split, root=target.data.root).class_names), (
            f"the class names of {dataset}"
        )
    from edgeresnext.data.folder import split_image_folder

    folder = split_image_folder(dataset, target.data.split)
    return folder.class_names, (
        f"the sub-folder names of {dataset}, sorted as torchvision's ImageFolder does "
        "(give model.class_names or --labels FILE if the training order differs)"
    )


def _preprocess(target: Target, meta: ModelMeta, has_metadata: bool) -> tuple[Preprocess, str | None]:
    """The model's preprocessing and, when it did not come from the checkpoint, where it came from."""
    from edgeresnext.data import DATASETS
    from edgeresnext.data.folder import PREPROCESS_FILE, folder_preprocess
    from edgeresnext.models import ARCHS

    if target.model.preprocess is not None:
        where = f"{target.source or target.name}: model.preprocess"
        return Preprocess.from_dict(target.model.preprocess, where), f"preprocessing: {where}"
    if has_metadata:
        return meta.preprocess, None
    dataset = target.data.dataset
    if dataset not in DATASETS and (Path(dataset) / PREPROCESS_FILE).is_file():
        return folder_preprocess(dataset), f"preprocessing: {Path(dataset) / PREPROCESS_FILE}"
    stem = ARCHS[meta.arch].stem if meta.arch in ARCHS else None
    if stem == "imagenet":
        return IMAGENET_PREPROCESS, (
            f"preprocessing: torchvision's ImageNet inference recipe for {meta.arch} (RGB, resize 256, center crop "
            "224, ImageNet mean/std); set model.preprocess or put a preprocess.json in the data folder if the "
            "model was trained otherwise"
        )
    if dataset in DATASETS:
        from edgeresnext.data import load_dataset

        own = load_dataset(dataset, split=target.data.split, root=target.data.root).preprocess
        return own, f"preprocessing: {dataset}'s own ({own.channels}, mean {list(own.mean)}, std {list(own.std)})"
    raise ConfigError(
        f"{target.model.checkpoint}: a bare {meta.arch} state dict does not say how its images were preprocessed; "
        f"set model.preprocess in the target or put a {PREPROCESS_FILE} in {dataset}"
    )


def _check_validation_data(target: Target, meta: ModelMeta) -> None:
    """An image folder whose classes the model does not have fails here, not after the export."""
    from edgeresnext.data import DATASETS

    if target.data.dataset in DATASETS:
        return
    from edgeresnext.data.folder import scan_image_folder

    if not Path(target.data.dataset).is_dir():
        raise DataError(f"data.dataset={shown(target.data.dataset)}: image folder not found")
    scan_image_folder(target.data.dataset, class_names=meta.class_names)


def _check_calibration(target: Target, meta: ModelMeta, notes: list[str]) -> int:
    """Decode and preprocess the calibration images the quantize stage will use (a bad one replaced by the next, as
    there); how many are usable. That is the check: an unreadable file, or one that does not become the model's input
    (another size under ``resize: null``), is never counted as usable."""
    from edgeresnext.data.folder import list_images, model_input

    spec = target.quant
    files = list_images(spec.calib_dir)
    usable, skipped = 0, []
    for path in files:
        if usable == spec.subset_size:
            break
        try:
            model_input(path, meta.preprocess, meta.input_chw)
        except DataError as err:
            if target.data.on_bad_image == "fail":
                raise DataError(f"{err} (data.on_bad_image: fail; 'skip' replaces it with the next image)") from err
            skipped.append(str(err))
            continue
        usable += 1
    if not usable:
        raise DataError(f"{spec.calib_dir}: none of its {len(files)} images can be read (first: {skipped[0]})")
    minimum = spec.min_calibration_images
    if minimum is not None and usable < minimum:
        raise DataError(
            f"{spec.calib_dir}: {usable} usable calibration image(s) ({len(files)} found), fewer than "
            f"quant.min_calibration_images={minimum}; add images or lower the minimum"
        )
    if usable < spec.subset_size:
        notes.append(
            f"calibration: {usable} usable image(s) in {spec.calib_dir} ({len(files)} found), fewer than "
            f"quant.subset_size={spec.subset_size}: calibrated on all of them (quant.min_calibration_images sets "
            "a hard minimum)"
        )
    if Path(spec.calib_dir).resolve() == Path(target.data.dataset).resolve():
        notes.append(
            f"calibration: {spec.calib_dir} is also the validation set: the drop is measured on images the "
            "quantizer has seen; a separate calibration folder (CALIB=...) gives an unbiased one"
        )
    return usable
