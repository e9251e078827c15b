"""Bundles served by the real Triton server against ``load_bundle`` in process, by hand (not part of ``make bench``:
it needs ``make tritonserver`` and finished builds).

For each ``--bundle LABEL=PATH``: the Triton repository of the bundle (``edgeresnext bundle triton``, ``--stand-in``
for a TensorRT bundle on a host without its GPU), the server started on it (its start-up: launch to ready, the
end-to-end model loaded), and 100 validation images sent one at a time, interleaved with ``load_bundle(...).predict``
in this process (the order alternates image by image; 5 warm-up calls each first). Local: ``decode_image(bytes)`` and
``predict`` (the work the end-to-end model does); served: one HTTP request, UINT8 image bytes in, top-5 out. Also
whether the served top-5 equals predict's (labels in order, scores to the printed precision).

    python -m bench.serving --bundle cpu=build/cpu/bundle --bundle jetson=build/jetson/bundle:stand-in \\
        --bundle byo=byo/bundle:stand-in:photos=/path/to/photos --out bench/serving.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' server launcher: loopback ports, its own HOME, stopped by PID

SCORE_TOLERANCE = 5e-7 + 2**-24  # Triton prints scores with 6 decimals (tests/test_triton.py)


def fashion_mnist_pngs(count: int) -> list[bytes]:
    from PIL import Image

    from edgeresnext.data import load_dataset

    out = []
    for array in load_dataset("fashion-mnist", split="test").images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def folder_images(folder: Path, count: int) -> list[bytes]:
    return [path.read_bytes() for path in sorted(p for p in folder.rglob("*") if p.is_file())[:count]]


def _served(client: Any, data: bytes) -> list[list[str]]:
    import tritonclient.http as http

    array = np.frombuffer(data, np.uint8)[None]
    image = http.InferInput("IMAGE", list(array.shape), "UINT8")
    image.set_data_from_numpy(array)
    wanted = http.InferRequestedOutput("SCORES", class_count=5)
    rows = client.infer("m_images", [image], outputs=[wanted]).as_numpy("SCORES")[0]
    return [row.decode().split(":", 2) for row in rows]


def _same(served: list[list[str]], predicted: Any) -> bool:
    if [int(i) for _, i, _ in served] != list(predicted.indices) or [x for _, _, x in served] != list(predicted.labels):
        return False
    return max(abs(float(s) - p) for (s, _, _), p in zip(served, predicted.scores, strict=True)) <= SCORE_TOLERANCE


def measure(label: str, bundle: Path, images: list[bytes], stand_in: bool, work: Path) -> dict[str, Any]:
    import tritonclient.http as http
    from triton_helpers import triton_server

    from edgeresnext.data.folder import decode_image
    from edgeresnext.runtime import load_bundle
    from edgeresnext.serving import triton_repository

    repo = triton_repository(bundle, work / "repo", name="m", stand_in=stand_in)
    began = time.perf_counter()
    classifier = load_bundle(bundle, stand_in=stand_in)
    loaded_s = time.perf_counter() - began
    local: list[float] = []
    remote: list[float] = []
    same = 0
    with classifier, triton_server([repo.path], ["m_images"], work) as server:
        client = http.InferenceServerClient(server.url)
        for data in images[:5]:
            _served(client, data)
            classifier.predict(decode_image(data), top_k=5)
        for k, data in enumerate(images):
            for side in ("remote", "local") if k % 2 else ("local", "remote"):
                began = time.perf_counter()
                if side == "local":
                    predicted = classifier.predict(decode_image(data), top_k=5)
                    local.append(time.perf_counter() - began)
                else:
                    served = _served(client, data)
                    remote.append(time.perf_counter() - began)
            same += _same(served, predicted)
        startup_s = server.startup_s
    return {
        "bundle": label,
        "images": len(images),
        "top5_equal": same,
        "server_startup_s": round(startup_s, 2),
        "load_bundle_s": round(loaded_s, 2),
        "server_p50_ms": round(1000 * float(np.median(remote)), 2),
        "load_bundle_p50_ms": round(1000 * float(np.median(local)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    from edgeresnext.environment import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle",
        action="append",
        required=True,
        metavar="LABEL=PATH[:stand-in][:photos=FOLDER]",
        help="a bundle; images: Fashion-MNIST's first test images, or the first files of FOLDER (sorted)",
    )
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "serving.json")
    args = parser.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for spec in args.bundle:
        label, rest = spec.split("=", 1)
        path, *options = rest.split(":")
        photos = next((Path(o.split("=", 1)[1]) for o in options if o.startswith("photos=")), None)
        images = folder_images(photos, args.images) if photos else fashion_mnist_pngs(args.images)
        work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
        try:
            rows.append(measure(label, Path(path), images, "stand-in" in options, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(rows[-1]), flush=True)
    load = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]}
    record = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": load, "rows": rows}
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
