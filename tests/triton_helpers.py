"""A real Triton server for the tests: ``tritonserver`` from the ``nvidia-pytriton`` wheel, which ``make test``
installs with ``--no-deps`` into ``.venv/tritonserver`` (the wheel's metadata asks numpy<2; the venv keeps its own).

:func:`server_problem` says why it cannot run here (the tests then skip with that reason); :func:`triton_server`
starts it on free loopback ports with the given repositories and stops it by its process group id, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where make test puts the wheel's files (EDGERESNEXT_TRITONSERVER: another folder holding the unpacked wheel).
WHEEL_DIR = Path(os.environ.get("EDGERESNEXT_TRITONSERVER") or Path(sys.prefix) / "tritonserver")
SERVER_ROOT = WHEEL_DIR / "pytriton" / "tritonserver"
LIBS = WHEEL_DIR / "nvidia_pytriton.libs"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
STUB = SERVER_ROOT / "backends" / "python" / "triton_python_backend_stub"


def _glibc() -> tuple[int, int] | None:
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return None
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def server_problem() -> str | None:
    """None when the wheel's tritonserver can serve Python-backend models here, else why not."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"the nvidia-pytriton wheel is for Linux x86_64 only; this is {platform.system()} {platform.machine()}"
    glibc = _glibc()
    if glibc is None or glibc < (2, 35):
        return (
            f"the nvidia-pytriton wheel needs glibc 2.35 or later (manylinux_2_35); this system has {glibc or 'none'}"
        )
    if not (SERVER_ROOT / "bin" / "tritonserver").is_file():
        return f"no tritonserver under {WHEEL_DIR} (make test installs it: pip install --no-deps --target ...)"
    if not STUB.is_file():
        return f"no Python backend stub for Python {PYTHON_VERSION} in {STUB.parent} (make test copies it there)"
    linked = subprocess.run(["ldd", str(STUB)], capture_output=True, text=True, check=False).stdout
    missing = [line.split()[0] for line in linked.splitlines() if "not found" in line]
    if missing:
        return f"the Python backend stub cannot find {', '.join(missing)} (the shared libpython {PYTHON_VERSION})"
    try:
        import tritonclient.http  # noqa: F401
    except ImportError as err:
        return f"tritonclient is not installed ({err}); pip install -e .[serve]"
    return None


def free_ports(count: int) -> list[int]:
    """Loopback ports nobody listens on now (chosen by the kernel)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Server:
    url: str  # host:port of the HTTP endpoint
    process: subprocess.Popen
    startup_s: float
    log: Path
    home: Path

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(home: Path) -> dict[str, str]:
    """What the server runs with: the wheel's libraries, the venv's site-packages and this checkout on PYTHONPATH (the
    end-to-end model reads it), a HOME of its own (a test checks nothing is written there)."""
    paths = [str(REPO), sysconfig.get_paths()["purelib"]]
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LD_LIBRARY_PATH": str(LIBS),
        "PYTHONPATH": os.pathsep.join(paths),
    }


@contextlib.contextmanager
def triton_server(repositories: list[Path], models: list[str], work: Path, timeout: float = 120) -> Iterator[Server]:
    """tritonserver on free loopback ports serving ``models`` (explicit mode: the native entries need backends the
    wheel does not have) from ``repositories``; killed (its whole process group: the backend stubs too) on exit."""
    http, grpc, metrics = free_ports(3)
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    log = work / "tritonserver.log"
    command = [
        str(SERVER_ROOT / "bin" / "tritonserver"),
        *(f"--model-repository={repo}" for repo in repositories),
        f"--backend-directory={SERVER_ROOT / 'backends'}",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        "--allow-metrics=false",
        "--model-control-mode=explicit",
        *(f"--load-model={model}" for model in models),
    ]
    began = time.perf_counter()
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command, env=server_env(home), stdout=handle, stderr=subprocess.STDOUT, cwd=work, start_new_session=True
        )
    server = Server(f"127.0.0.1:{http}", process, 0.0, log, home)
    try:
        while not server.ready():
            if process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {process.returncode}:\n{server.log_text()[-4000:]}")
            if time.perf_counter() - began > timeout:
                raise RuntimeError(f"tritonserver not ready after {timeout} s:\n{server.log_text()[-4000:]}")
            time.sleep(0.1)
        server.startup_s = time.perf_counter() - began
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (started as its own session: its id is the server's PID), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the backend stubs, should any outlive the server
    process.wait(timeout=15)
