"""Facts about the machine a figure was measured on: CPU model and flags, usable cores, package versions.

The bottom layer (standard library only): validation reports, bundle manifests and stage caches all read them
from here, so every figure in a report names the same CPU the same way. Which runtimes' versions matter each
registered backend says (``Backend.packages``, read through :mod:`edgeresnext.registry`).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from edgeresnext.registry import backend_class, backend_names

# The packages whose versions decide what a stage produces (the stage cache keys on them), besides the backends'.
CORE_PACKAGES = ("torch", "onnx", "nncf")
# The packages a validation report lists, besides the backends'.
REPORT_CORE_PACKAGES = ("edgeresnext", "numpy", *CORE_PACKAGES)
# CPU features that change which float and integer kernels the runtimes pick (and so the last bits of a result).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp", "sve")


def backend_packages() -> tuple[str, ...]:
    """Every package a registered backend says its results depend on (``Backend.packages``), in registry order."""
    found: list[str] = []
    for name in backend_names():
        found += [p for p in backend_class(name).packages if p not in found]
    return tuple(found)


def stage_packages() -> tuple[str, ...]:
    """The packages whose versions decide what a stage produces: a change reruns the stage."""
    return (*CORE_PACKAGES, *(p for p in backend_packages() if p not in CORE_PACKAGES))


def package_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """``{package: version}`` of ``names`` (default: :func:`stage_packages`); a missing one is ``"not installed"``."""
    versions = {}
    for name in stage_packages() if names is None else names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpuinfo_field(*keys: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (``AMD EPYC ...``, ``Intel(R) Xeon(R) ...``)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_family_model() -> str | None:
    """x86 ``cpu family``/``model`` (``25/17`` is AMD Zen 4): tells CPU generations apart where the model name is
    only ``AMD EPYC``; None where /proc/cpuinfo has no such fields (ARM)."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    return f"{family}/{model}" if family and model else None


def cpu_flags() -> list[str]:
    """The :data:`KERNEL_FLAGS` this CPU has (x86 ``flags``, ARM ``Features``)."""
    present = set((_cpuinfo_field("flags", "Features") or "").split())
    return [flag for flag in KERNEL_FLAGS if flag in present]


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's share), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def environment(threads: int | None = None) -> dict[str, Any]:
    """Where the figures were measured: CPU, its kernel-relevant flags, cores, threads, OS, Python, packages."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable_cores(),
        "threads": threads,
        "load_average": load,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions((*REPORT_CORE_PACKAGES, *backend_packages())),
    }


# --------------------------------------------------------------------------------------------- no telemetry
# The switches keep_home_clean sets, by library (tests/test_hostile_round3.py runs commands with a fresh HOME).
ORT_TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"
OPENVINO_TELEMETRY_MODULE = "openvino_telemetry"
MATPLOTLIB_FOLDER = "MPLCONFIGDIR"
MATPLOTLIB_PREFIX = "edgeresnext-matplotlib-"


def keep_home_clean() -> None:
    """No telemetry, and nothing of the runtimes' own in the home folder; ``edgeresnext/__init__.py`` calls this before
    anything else, so every entry point (the CLI, :mod:`edgeresnext.runtime` in a device app, the pipeline used from
    Python, torchrun's ranks) runs with it.

    Left alone, the libraries write outside ``--out`` on import: OpenVINO and NNCF, through the ``openvino_telemetry``
    client, a client id and usage counts to ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` (and send usage events);
    ONNX Runtime (1.29 and later, Linux and macOS) a device id and an event store to
    ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` (and uploads events); matplotlib its font cache to
    ``~/.cache/matplotlib``. Each is turned off by the switch its project provides:

    - ONNX Runtime: ``ORT_DISABLE_TELEMETRY=1``, its documented full opt-out, read when the runtime initializes (no
      uploader, device id or event store is created). Set always, whatever the environment said.
    - OpenVINO and NNCF: ``openvino_telemetry`` is marked absent (``sys.modules[name] = None`` makes its import fail)
      and both take the path they have for a machine without it: OpenVINO's converter its ``telemetry_stub``, NNCF its
      ``NNCFTelemetryStub`` ("No telemetry will be sent"). The client reads no environment switch, and its documented
      opt-out (``opt_in_out --opt_out``) is itself a file written to ``~/intel``.
    - matplotlib: ``MPLCONFIGDIR`` (its documented setting for its config and cache folder), when unset, a new folder
      in the temporary folder, made only when matplotlib is imported (a report with plots) and removed at exit.

    Idempotent. A library imported before edgeresnext has started already (a device app should import edgeresnext
    first, or set the same switches itself).
    """
    import sys

    os.environ[ORT_TELEMETRY_SWITCH] = "1"
    if OPENVINO_TELEMETRY_MODULE not in sys.modules:
        sys.modules[OPENVINO_TELEMETRY_MODULE] = None  # type: ignore[assignment]  # import fails: the stub is used
    if MATPLOTLIB_FOLDER not in os.environ and "matplotlib" not in sys.modules:
        import atexit
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.gettempdir()) / f"{MATPLOTLIB_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        os.environ[MATPLOTLIB_FOLDER] = str(folder)
        atexit.register(_remove_own_folder, str(folder), os.getpid())


def _remove_own_folder(folder: str, pid: int) -> None:
    """Remove the matplotlib folder this process chose (a forked child that inherits the handler leaves it)."""
    import shutil

    if os.getpid() == pid and os.environ.get(MATPLOTLIB_FOLDER) == folder:
        shutil.rmtree(folder, ignore_errors=True)
