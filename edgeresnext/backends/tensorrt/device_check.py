"""The device check: run the engine just built on the device on the check set the bundle carries, and compare it with
what the build host measured for the same images.

This file is also the kit's ``device_check.py`` (copied verbatim, like ``seal.py``): the Python 3 standard library
only, no edgeresnext import. Its intervals and gates are the host's own code: ``check/stats.py`` is a verbatim copy of
``edgeresnext/stats.py``, loaded from the kit by path. The engine runs through ``trtexec`` (JetPack ships it):
``--loadEngine``, ``--shapes``, ``--loadInputs`` (raw float32 NCHW files, already put through the bundle's
preprocessing) and ``--exportOutput`` (trtexec's JSON), and its timing summary gives the latency at batch 1 and at
the check's batch (the plan's largest).

The check set (``check/``, written by the build host): ``check.json`` (labels, the host's per-image FP32 and INT8
stand-in logits, the gate, how the images were sampled and normalized), ``pixels-NNN.u8`` (one file per batch: the
images after the bundle's resize and crop, uint8 NCHW, a quarter of their float32 size), ``host_report.json`` (the
host's validation report, for ``edgeresnext report BUNDLE``). The device normalizes the pixels into the float32 files
trtexec reads (:func:`normalized_bytes`: ``((x / 255) - mean) / std``, every step rounded to float32, with numpy when
it is there and with the standard library alone when not, byte for byte the same), and the host computed its outputs
on exactly those bytes.

Result (recorded in the sealed manifest under the engine's ``device_check``): ``status`` ``checked`` (the gate
passed; ``gate.provable`` says whether on its bound or, NOT PROVEN, on the measured value), ``failed`` (the engine
disagrees with the host's INT8 stand-in beyond ``backend_options.tensorrt.max_device_disagreement``) or
``unchecked`` (no check set, no trtexec, or trtexec failed; ``reason`` says which). Run alone it exits 0 (checked and
proven), 1 (failed), 3 (checked, NOT PROVEN) or 2 (the check could not run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

CHECK_DIR = "check"
CHECK_FILE = "check.json"
STATS_FILE = "stats.py"
HOST_REPORT = "host_report.json"
GATE = "max_device_disagreement"
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
_NUMBER = r"([-+0-9.eEinfa]+)"


class CheckError(Exception):
    """The check could not run (the engine stays unchecked); the message says why."""


def load_stats(kit_dir: Path):
    """The host's stats module, from the kit's verbatim copy."""
    path = Path(kit_dir) / CHECK_DIR / STATS_FILE
    spec = importlib.util.spec_from_file_location("edgeresnext_kit_stats", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise CheckError(f"{CHECK_DIR}/{STATS_FILE} is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    writing, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the bundle: unlisted
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writing
    return module


def find_trtexec(trtexec: str | None = None) -> str | None:
    """trtexec as build_engine.sh finds it: the argument, $TRTEXEC, PATH, JetPack's."""
    for candidate in (trtexec, os.environ.get("TRTEXEC"), shutil.which("trtexec"), JETPACK_TRTEXEC):
        if candidate and os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def read_export(path: Path, output: str) -> list[list[float]]:
    """Rows of ``output`` from trtexec's ``--exportOutput`` JSON: ``[{"name", "dimensions": "NxK", "values"}]``."""
    text = path.read_text(encoding="utf-8")
    # trtexec prints non-finite floats as C++ streams do (nan, inf): not JSON; keep them as strings to read below.
    text = re.sub(r"(?<![\"\w])(-?(?:nan|inf)\w*)", r'"\1"', text)
    tensors = json.loads(text)
    if not isinstance(tensors, list) or not tensors:
        raise CheckError(f"{path.name}: no output tensors in trtexec's export")
    tensor = next((t for t in tensors if t.get("name") == output), tensors[0] if len(tensors) == 1 else None)
    if tensor is None:
        raise CheckError(f"{path.name}: no output named {output!r} (found {[t.get('name') for t in tensors]})")
    dims = [int(d) for d in str(tensor["dimensions"]).split("x") if d.strip()]
    values = [float(v) for v in tensor["values"]]
    if len(dims) != 2 or dims[0] * dims[1] != len(values):
        raise CheckError(f"{path.name}: output {tensor.get('name')!r} is {tensor['dimensions']}, not N x classes")
    classes = dims[1]
    return [values[i * classes : (i + 1) * classes] for i in range(dims[0])]


def parse_timing(log: str, batch: int) -> dict | None:
    """p50, p99 and throughput from trtexec's performance summary (its GPU Compute Time and Throughput lines)."""
    compute = re.search(r"GPU Compute Time: .*?median = " + _NUMBER + r" ms(.*)", log)
    latency = re.search(r"\] Latency: .*?median = " + _NUMBER + r" ms(.*)", log)
    throughput = re.search(r"Throughput: " + _NUMBER + " qps", log)
    if compute is None or throughput is None:
        return None

    def p99(rest: str) -> float | None:
        found = re.search(r"percentile\(99(?:\.0*)?%\) = " + _NUMBER + " ms", rest)
        return float(found.group(1)) if found else None

    qps = float(throughput.group(1))
    timing = {
        "batch": batch,
        "p50_ms": float(compute.group(1)),
        "p99_ms": p99(compute.group(2)),
        "throughput_qps": qps,
        "images_per_s": qps * batch,
        "measure": "trtexec GPU Compute Time (median, 99th percentile) and Throughput",
    }
    if latency is not None:
        timing["host_latency_p50_ms"] = float(latency.group(1))
        timing["host_latency_p99_ms"] = p99(latency.group(2))
    return timing


def power_mode() -> str | None:
    """The Jetson power mode (``nvpmodel -q``), when it can be read."""
    tool = shutil.which("nvpmodel")
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, "-q"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"NV Power Mode:\s*(.+)", done.stdout)
    return found.group(1).strip() if found else None


def _trtexec(trtexec: str, args: list[str], work: Path) -> str:
    done = subprocess.run([trtexec, *args], capture_output=True, text=True, cwd=work, timeout=900, check=False)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        tail = " | ".join(line.strip() for line in log.strip().splitlines()[-3:])
        raise CheckError(f"trtexec {' '.join(args[:2])} ... failed (exit {done.returncode}): {tail}")
    return log


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (IEEE round to nearest, even), as a Python float."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _lanes(mean: float, std: float) -> list[bytes]:
    """For one channel: four ``bytes.translate`` tables, lane k mapping a pixel value to byte k of its normalized
    float32 (little-endian). Each step is rounded to float32 as numpy's float32 arithmetic rounds it (an operation of
    two float32 values done in double, then rounded, is correctly rounded: 53 >= 2 x 24 + 2 bits)."""
    mean32, std32 = _float32(mean), _float32(std)
    values = [struct.pack("<f", _float32(_float32(_float32(v / 255.0) - mean32) / std32)) for v in range(256)]
    return [bytes(value[k] for value in values) for k in range(4)]


def normalized_bytes(pixels: bytes, chw: list[int], mean: list[float], std: list[float]) -> bytes:
    """uint8 NCHW pixels to the float32 NCHW bytes trtexec's ``--loadInputs`` reads (little-endian, as Jetson and
    x86 are): ``((x / 255) - mean[c]) / std[c]``, each step rounded to float32. numpy when importable, else the
    standard library (per-channel lookup tables applied with ``bytes.translate``, one byte lane at a time); the two
    give the same bytes (``tests/test_device_check.py``), which are the bytes the build host ran its models on."""
    channels, height, width = (int(d) for d in chw)
    plane = height * width
    if len(mean) != channels or len(std) != channels or len(pixels) % (channels * plane):
        raise CheckError(f"{len(pixels)} pixel bytes for {channels}x{height}x{width} images with {len(mean)} means")
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        array = np.frombuffer(pixels, dtype=np.uint8).reshape(-1, channels, height, width).astype(np.float32)
        mean32 = np.asarray(mean, dtype=np.float32).reshape(1, channels, 1, 1)
        std32 = np.asarray(std, dtype=np.float32).reshape(1, channels, 1, 1)
        return ((array / np.float32(255.0) - mean32) / std32).astype("<f4").tobytes()
    lanes = [_lanes(m, s) for m, s in zip(mean, std, strict=True)]
    out = bytearray(4 * len(pixels))
    for start in range(0, len(pixels), plane):
        source = pixels[start : start + plane]
        for k, lane in enumerate(lanes[(start // plane) % channels]):
            out[4 * start + k : 4 * (start + plane) : 4] = source.translate(lane)
    return bytes(out)


# How a version-2 check set stores its pixels: zlib over rows that hold their XOR with the row above (per image and
# channel), lossless; photos shrink by a quarter to a third, and both steps undo at C speed without numpy.
PIXEL_ENCODING = "zlib(xor-up)"


def encoded_pixels(pixels: bytes, chw: list[int]) -> bytes:
    """uint8 NCHW pixels as a check set stores them (:data:`PIXEL_ENCODING`); the inverse of :func:`decoded_pixels`."""
    _, height, width = (int(d) for d in chw)
    rows = [pixels[start : start + width] for start in range(0, len(pixels), width)]
    out = bytearray(len(pixels))
    for index, row in enumerate(rows):
        above = rows[index - 1] if index % height else bytes(width)
        out[index * width : (index + 1) * width] = (
            int.from_bytes(row, "little") ^ int.from_bytes(above, "little")
        ).to_bytes(width, "little")
    return zlib.compress(bytes(out), 9)


def decoded_pixels(data: bytes, chw: list[int]) -> bytes:
    """The uint8 NCHW pixels of a check set's file: each row XOR the decoded row above it, from the plane's top."""
    _, height, width = (int(d) for d in chw)
    raw = zlib.decompress(data)
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width)
        return np.bitwise_xor.accumulate(rows, axis=1).tobytes()
    out = bytearray(len(raw))
    above = 0
    for index, start in enumerate(range(0, len(raw), width)):
        above = int.from_bytes(raw[start : start + width], "little") ^ (above if index % height else 0)
        out[start : start + width] = above.to_bytes(width, "little")
    return bytes(out)


def _input_file(check: dict, check_dir: Path, batch: dict, index: int, work: Path) -> Path:
    """The batch as trtexec reads it: a version-1 set's float32 file as it is; a version-2 set's uint8 pixels
    decoded and normalized into ``work`` (never into the bundle)."""
    source = check_dir / batch["file"]
    if check.get("dtype", "float32") == "float32":
        return source
    chw, norm = check["input_chw"], check["normalize"]
    pixels = source.read_bytes()
    if check.get("encoding") == PIXEL_ENCODING:
        try:
            pixels = decoded_pixels(pixels, chw)
        except zlib.error as err:
            raise CheckError(f"{batch['file']}: not a {PIXEL_ENCODING} pixel file ({err})") from err
    expected = batch["size"] * chw[0] * chw[1] * chw[2]
    if len(pixels) != expected:
        raise CheckError(f"{batch['file']}: {len(pixels)} bytes, {expected} expected ({batch['size']} images)")
    target = work / f"inputs-{index:03d}.bin"
    target.write_bytes(normalized_bytes(pixels, chw, norm["mean"], norm["std"]))
    return target


def run_engine(trtexec: str, engine: Path, check: dict, check_dir: Path, work: Path) -> tuple[list, dict]:
    """The engine's logits for every check image, and trtexec's timing at batch 1 and at the check's batch."""
    name, chw = check["input_name"], "x".join(str(d) for d in check["input_chw"])
    logits: list[list[float]] = []
    timing: dict[str, dict] = {}
    for index, batch in enumerate(check["batches"]):
        out = work / f"outputs-{index:03d}.json"
        args = [
            f"--loadEngine={engine}",
            f"--shapes={name}:{batch['size']}x{chw}",
            f"--loadInputs={name}:{_input_file(check, check_dir, batch, index, work)}",
            f"--exportOutput={out}",
        ]
        if index > 0:  # the first call's timing run is the batch's timing; the rest only compute
            args += ["--iterations=1", "--warmUp=0", "--duration=0"]
        log = _trtexec(trtexec, args, work)
        rows = read_export(out, check["output_name"])
        if len(rows) != batch["size"]:
            raise CheckError(f"trtexec returned {len(rows)} rows for a batch of {batch['size']}")
        logits.extend(rows)
        if index == 0:
            timing[f"batch_{batch['size']}"] = parse_timing(log, batch["size"])
    if "batch_1" not in timing:
        log = _trtexec(trtexec, [f"--loadEngine={engine}", f"--shapes={name}:1x{chw}"], work)
        timing["batch_1"] = parse_timing(log, 1)
    return logits, {key: value for key, value in timing.items() if value is not None}


def _top1(rows: list[list[float]]) -> list[int]:
    return [max(range(len(row)), key=row.__getitem__) for row in rows]


def _interval(stats, successes: int, n: int, confidence: float) -> dict:
    # exact (Clopper-Pearson), as the host report's agreement interval (validate.metrics.paired_uncertainty)
    interval = stats.proportion_interval(successes, n, confidence, "exact")
    return {"value": successes / n, "count": successes, "n": n, "interval": [interval.lower, interval.upper]}


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def evaluate(stats, check: dict, device_logits: list[list[float]]) -> dict:
    """Top-1, agreement, |Δlogit| and the gate: the device's logits against the host's, with the host's stats."""
    labels = check["labels"]
    n = len(labels)
    if len(device_logits) != n:
        raise CheckError(f"the engine gave {len(device_logits)} outputs for {n} check images")
    confidence = check["gate"].get("confidence")
    level = confidence if confidence is not None else 0.95
    device = _top1(device_logits)
    fp32, stand_in = check["host"]["fp32_top1"], check["host"]["stand_in_top1"]
    right = [d == y for d, y in zip(device, labels, strict=True)]
    fp32_right = [f == y for f, y in zip(fp32, labels, strict=True)]
    a = sum(f and r for f, r in zip(fp32_right, right, strict=True))
    b = sum(f and not r for f, r in zip(fp32_right, right, strict=True))
    c = sum(r and not f for f, r in zip(fp32_right, right, strict=True))
    counts = stats.PairedCounts(a, b, c, n - a - b - c)
    drop = stats.drop_interval(counts, level)
    agree_fp32 = sum(d == f for d, f in zip(device, fp32, strict=True))
    agree_si = sum(d == s for d, s in zip(device, stand_in, strict=True))
    deltas = [
        abs(x - y)
        for row, ref in zip(device_logits, check["host"]["stand_in_logits"], strict=True)
        for x, y in zip(row, ref, strict=True)
    ]
    result = {
        "images": n,
        "confidence": level,
        "top1": _interval(stats, sum(right), n, level),
        "host_top1_fp32": sum(fp32_right) / n,
        "host_top1_stand_in": sum(s == y for s, y in zip(stand_in, labels, strict=True)) / n,
        "agreement_fp32": {
            **_interval(stats, agree_fp32, n, level),
            "lower_bound": stats.agreement_lower_bound(agree_fp32, n, level),
        },
        "agreement_stand_in": {
            **_interval(stats, agree_si, n, level),
            "lower_bound": stats.agreement_lower_bound(agree_si, n, level),
        },
        "top1_drop_vs_fp32": {
            "value": counts.drop,
            "interval": [drop.lower, drop.upper],
            "upper_bound": stats.drop_upper_bound(counts, level),
            "discordant": counts.discordant,
            "mcnemar_p": stats.exact_mcnemar_p(counts.b, counts.c),
        },
        "max_abs_dlogit_vs_stand_in": max(deltas) if deltas else 0.0,
        "mean_abs_dlogit_vs_stand_in": sum(deltas) / len(deltas) if deltas else 0.0,
        "stand_in": check["host"]["stand_in_name"],
    }
    if not all(math.isfinite(x) for x in deltas):
        result["max_abs_dlogit_vs_stand_in"] = None
    if "sample" in check:  # how the set was chosen (check.json version 2), and which images the engine disagrees on
        result["sample"] = {**check["sample"], "dataset": check.get("dataset")}
        result["class_counts"] = check.get("class_counts")
        ids = check.get("ids") or [str(i) for i in range(n)]
        result["disagreeing_images"] = [ids[i] for i in range(n) if device[i] != stand_in[i]][:20]
    result["gate"] = gate(stats, check["gate"], agree_si, n)
    return result


def gate(stats, spec: dict, agree: int, n: int) -> dict:
    """``max_device_disagreement``: the engine's top-1 disagreement with the host's INT8 stand-in, decided as the
    host decides ``min_agreement`` (on the one-sided lower bound of the agreement; NOT PROVEN on a set too small to
    prove the limit, then on the measured value unless ``gates.unproven: fail``). The measured value is compared as
    the host compares ``min_agreement = 1 - limit``: ``agree / n >= 1 - limit`` (``1 - agree / n <= limit`` rounds
    differently: 1 of 20 is over 5 % that way; tests/test_parity.py feeds both gates every count up to 300)."""
    limit, confidence, unproven = spec.get(GATE), spec.get("confidence"), spec.get("unproven", "warn")
    disagreement = 1 - agree / n
    head = f"{GATE}: the engine disagrees with the host's INT8 stand-in on {n - agree} of {n} images "
    head += f"({_pct(disagreement)})"
    if limit is None:
        return {"limit": None, "measured": disagreement, "passed": True, "message": f"{head}; no gate set"}
    over = f"over the {_pct(limit)} limit by {100 * (disagreement - limit):.2f} pt"
    within = agree / n >= 1 - limit
    if confidence is None:
        passed = within
        message = f"{head} <= {_pct(limit)} (measured value; gates.confidence: null)" if passed else f"{head}, {over}"
        return {"limit": limit, "measured": disagreement, "passed": passed, "basis": "point", "message": message}
    bound = stats.agreement_lower_bound(agree, n, confidence)
    needed = stats.min_images_for_agreement(1 - limit, confidence)
    most = stats.max_disagreements(n, limit, confidence)
    level = f"{100 * confidence:g} %"
    if most is not None:  # the set can prove the limit: decided on the bound
        passed = bound >= 1 - limit
        proves = f"{n} images prove <= {_pct(limit)} when at most {most} disagree"
        if passed:
            message = f"{head}; {level} upper bound {_pct(1 - bound)} <= {_pct(limit)} (passed: {proves})"
        elif not within:
            message = f"{head}, {over} ({level} upper bound {_pct(1 - bound)}; {proves})"
        else:
            message = (
                f"{head}; its {level} upper bound {_pct(1 - bound)} is over the {_pct(limit)} limit by "
                f"{100 * ((1 - bound) - limit):.2f} pt ({proves})"
            )
    else:
        passed = within and unproven == "warn"
        short = "no finite set can" if needed is None else f"at least {needed:,} images needed"
        if passed:
            message = (
                f"{head} <= {_pct(limit)}; NOT PROVEN: {n} images cannot prove it at {level} ({short}; "
                "backend_options.tensorrt.device_check_images sets the check set's size), decided on the measured value"
            )
        elif not within:
            message = f"{head}, {over}"
        else:
            message = (
                f"{head}; NOT PROVEN: {n} images cannot prove {_pct(limit)} at {level} ({short}; gates.unproven: fail)"
            )
    return {
        "limit": limit,
        "measured": disagreement,
        "passed": passed,
        "basis": "bound",
        "upper_bound": 1 - bound,
        "provable": most is not None,
        "max_disagreements": most,
        "min_images": needed,
        "message": message,
    }


def run_check(kit_dir, engine, record: dict | None = None, trtexec: str | None = None, stats=None) -> dict:
    """The device check of ``engine`` (a file in ``kit_dir``): the record for the manifest (never raises).

    ``stats``: the host's statistics module; None loads the kit's copy (``check/stats.py``), as a device without
    edgeresnext must. edgeresnext passes its own ``edgeresnext.stats`` and never runs the kit's copy."""
    kit_dir = Path(kit_dir)
    check_dir = kit_dir / CHECK_DIR
    started = time.time()
    result: dict = {"status": "unchecked", "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not (check_dir / CHECK_FILE).is_file():
        result["reason"] = f"no check set in this kit ({CHECK_DIR}/{CHECK_FILE}); `make build` writes one"
        return result
    found = find_trtexec(trtexec)
    if found is None:
        result["reason"] = f"trtexec not found (JetPack: {JETPACK_TRTEXEC}; set TRTEXEC=)"
        return result
    try:
        stats = stats if stats is not None else load_stats(kit_dir)
        check = json.loads((check_dir / CHECK_FILE).read_text(encoding="utf-8"))
        work = Path(tempfile.mkdtemp(prefix="edgeresnext-device-check-"))
        try:
            logits, timing = run_engine(found, Path(engine).resolve(), check, check_dir.resolve(), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        measured = evaluate(stats, check, logits)
    except (CheckError, OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError) as err:
        result["reason"] = f"the check could not run: {err}"
        return result
    record = record or {}
    result.update(measured)
    result["status"] = "checked" if measured["gate"]["passed"] else "failed"
    result["latency"] = timing
    result["device"] = {
        "tensorrt_version": record.get("tensorrt_version"),
        "gpu_name": record.get("gpu_name"),
        "gpu_sm": record.get("gpu_sm"),
        "power_mode": power_mode(),
    }
    result["checked_with"] = "trtexec"
    result["seconds"] = round(time.time() - started, 2)
    return result


def summary_lines(result: dict) -> list[str]:
    """What the device step prints about the check."""
    status = result["status"]
    if status == "unchecked":
        return [f"device check: UNCHECKED: {result.get('reason')}"]
    top1, fp32, si = result["top1"], result["agreement_fp32"], result["agreement_stand_in"]
    level = f"{100 * result['confidence']:g} %"
    lines = [
        f"device check: {status.upper()} on {result['images']} images: top-1 {_pct(top1['value'])} "
        f"({level} interval {_pct(top1['interval'][0])}..{_pct(top1['interval'][1])}; host FP32 "
        f"{_pct(result['host_top1_fp32'])}), agreement with FP32 {_pct(fp32['value'])}, with the INT8 stand-in "
        f"{_pct(si['value'])}, max |Δlogit| {result['max_abs_dlogit_vs_stand_in']:.4g}",
        f"  {result['gate']['message']}",
    ]
    sample = result.get("sample")
    if sample:
        counts = ", ".join(f"{name} {count}" for name, count in (result.get("class_counts") or {}).items())
        seed = f"data.sample_seed {sample['seed']}"
        drawn = (
            f"a class-stratified random sample of {sample['of']:,} validation images ({seed})"
            if sample["of"] > result["images"]
            else "all the validation images"
        )
        lines.append(f"  check set: {drawn}: {counts}")
    if result.get("disagreeing_images"):
        lines.append(f"  disagreeing images: {', '.join(result['disagreeing_images'][:5])}")
    for _, timing in sorted(result.get("latency", {}).items()):
        lines.append(
            f"  latency @{timing['batch']}: p50 {timing['p50_ms']:.3f} ms, p99 "
            f"{timing['p99_ms'] if timing['p99_ms'] is None else format(timing['p99_ms'], '.3f')} ms, "
            f"{timing['images_per_s']:.1f} img/s (trtexec)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="device_check.py",
        description="Run the kit's engine on the bundle's check set and compare it with the host (standard library "
        "and trtexec only). The device step (build_engine.sh / seal.py) runs it and records the result.",
    )
    here = Path(__file__).resolve().parent
    parser.add_argument("--kit", default=str(here), help="the kit folder (default: this file's)")
    parser.add_argument("--engine", default=None, help="the engine (default: the kit plan's)")
    parser.add_argument("--trtexec", default=None, help="trtexec to run (default: $TRTEXEC, PATH, JetPack's)")
    args = parser.parse_args(argv)
    kit = Path(args.kit)
    engine = args.engine or kit / json.loads((kit / "kit.json").read_text(encoding="utf-8"))["plan"]["engine"]
    result = run_check(kit, engine, trtexec=args.trtexec)
    print(json.dumps(result, indent=2))
    return exit_code(result)


# Exit codes, as edgeresnext's commands use them (edgeresnext.errors.EXIT_*; this file imports nothing of edgeresnext):
# 0 every gate proven, 1 a gate failed, 2 the check could not run, 3 passed on the measured value but NOT PROVEN.
EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_UNPROVEN = 0, 1, 2, 3


def exit_code(result: dict) -> int:
    """The check's exit code: 0 checked and proven, 1 failed, 3 checked but NOT PROVEN, 2 not checked at all."""
    if result["status"] == "failed":
        return EXIT_FAILED
    if result["status"] != "checked":
        return EXIT_ERROR
    return EXIT_OK if result.get("gate", {}).get("provable", True) else EXIT_UNPROVEN


if __name__ == "__main__":
    sys.exit(main())
