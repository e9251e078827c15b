"""Runs the stages of one target into ``build/<target>/``, skipping stages whose inputs did not change.

Each stage has its own folder with a ``stage.json`` that records the hash of the stage's inputs (files,
config section, package versions) and the sha256 of each output. A rerun skips a stage whose input hash
matches and whose outputs are intact; any change reruns that stage and every stage after it. Outputs are
written through :mod:`edgeresnext.atomic`, and ``stage.json`` is written last, so a killed build never
leaves a stage that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeresnext.atomic import write_json_atomic
from edgeresnext.config import SHIPPED_CHECKPOINT, Target
from edgeresnext.errors import CheckpointError

logger = logging.getLogger(__name__)

SHIPPED = {"fashion-mnist": "fashion_mnist_resnext11_4x8d.safetensors"}
STAGE_FILE = "stage.json"


def resolve_checkpoint(spec: str) -> Path:
    """``shipped:<name>`` to the packaged weights file; anything else is a path."""
    if spec.startswith("shipped:"):
        name = spec.split(":", 1)[1]
        if name not in SHIPPED:
            raise CheckpointError(f"unknown shipped model {name!r}; expected one of: "
                                  + ", ".join(f"shipped:{k}" for k in SHIPPED))
        path = Path(__file__).parent / "weights" / SHIPPED[name]
        if not path.is_file():
            raise CheckpointError(f"{path}: the shipped model is missing from this installation; "
                                  "run `make train` to recreate it")
        return path
    return Path(spec)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = ("torch", "onnx", "onnxruntime", "openvino", "nncf")) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def inputs_hash(config: Any, files: list[Path], packages: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(str(path.name).encode())
        digest.update(sha256_file(path).encode())
    digest.update(json.dumps(packages, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class StageResult:
    name: str
    folder: Path
    outputs: dict[str, str]
    skipped: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def run_stage(folder: Path, name: str, config: Any, input_files: list[Path],
              produce: Callable[[Path], dict[str, Any]], upstream_changed: bool = False) -> StageResult:
    """Run ``produce(folder)`` unless ``folder/stage.json`` proves the same inputs already made intact outputs.

    ``produce`` writes its files into ``folder`` (atomically) and returns an ``info`` dict; every regular
    file it leaves (besides stage.json) is recorded with its sha256.
    """
    folder.mkdir(parents=True, exist_ok=True)
    packages = package_versions()
    key = inputs_hash(config, input_files, packages)
    record_path = folder / STAGE_FILE
    if not upstream_changed and record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
        if record.get("inputs_hash") == key and _outputs_intact(folder, record.get("outputs", {})):
            logger.info("stage %s: inputs unchanged, skipped", name)
            return StageResult(name, folder, record["outputs"], True, 0.0, record.get("info", {}))
        logger.info("stage %s: inputs changed or outputs damaged, rerunning", name)
    record_path.unlink(missing_ok=True)
    began = time.perf_counter()
    info = produce(folder)
    outputs = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
               if p.is_file() and p.name != STAGE_FILE and not p.name.startswith(".")}
    seconds = round(time.perf_counter() - began, 2)
    write_json_atomic(record_path, {"stage": name, "inputs_hash": key, "config": config, "packages": packages,
                                    "inputs": [str(p) for p in input_files], "outputs": outputs, "info": info,
                                    "seconds": seconds})
    return StageResult(name, folder, outputs, False, seconds, info)


def _outputs_intact(folder: Path, outputs: dict[str, str]) -> bool:
    return bool(outputs) and all((folder / n).is_file() and sha256_file(folder / n) == h for n, h in outputs.items())


@dataclass
class BuildSummary:
    target: str
    root: Path
    stages: list[StageResult]
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"build {self.target}: {'OK' if self.ok else 'FAILED'}  ({self.root})"]
        for stage in self.stages:
            state = "cached" if stage.skipped else f"{stage.seconds:.1f} s"
            files = ", ".join(f"{n} ({(stage.folder / n).stat().st_size / 1e6:.2f} MB)" for n in stage.outputs)
            lines.append(f"  {stage.name:10s} {state:>9s}  {files}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def stage_model(target: Target, root: Path) -> StageResult:
    """Resolve the FP32 checkpoint, load it safely, and store it (with metadata) as model.safetensors."""
    checkpoint = resolve_checkpoint(target.model.checkpoint)
    section = target.model.model_dump(mode="json")

    def produce(folder: Path) -> dict[str, Any]:
        from edgeresnext.models import load_checkpoint, save_checkpoint

        kwargs = {k: v for k, v in (("num_classes", target.model.num_classes),
                                    ("in_channels", target.model.in_channels)) if v is not None}
        model = load_checkpoint(checkpoint, arch=target.model.arch, **kwargs)
        save_checkpoint(folder / "model.safetensors", model, model.meta)
        return {"arch": model.meta.arch, "num_classes": model.meta.num_classes, "source": str(checkpoint),
                "parameters": sum(p.numel() for p in model.parameters())}

    return run_stage(root / "model", "model", section, [checkpoint], produce)


def build(target: Target, out_root: str | Path = "build", progress: bool = True) -> BuildSummary:
    """Run every stage for ``target``; returns the summary the CLI prints."""
    root = Path(out_root) / target.name
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "config.json", target.resolved())
    stages = [stage_model(target, root)]
    summary = BuildSummary(target=target.name, root=root, stages=stages)
    if target.model.checkpoint == SHIPPED_CHECKPOINT:
        summary.notes.append("model: the shipped Fashion-MNIST ResNeXt (override with CHECKPOINT=... / MODEL=...)")
    return summary
