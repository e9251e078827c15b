"""Set-up on a fresh machine: Fashion-MNIST found, installed with apt-get, downloaded, or one line saying what to run;
the default calibration folder written only when the build reads it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgeresnext.config import load_target
from edgeresnext.data import calibration, fashion_mnist
from edgeresnext.errors import DataError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
TARGETS = Path(__file__).resolve().parents[2] / "targets"


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No copy anywhere: Debian's folder and the cache point at empty folders, no $EDGERESNEXT_DATA, no network."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_ROOT", tmp_path / "debian" / "fashion-mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGERESNEXT_DATA", raising=False)
    monkeypatch.delenv("EDGERESNEXT_NO_INSTALL", raising=False)
    # Port 9 (discard) on loopback refuses at once: the download fails as it does offline, without waiting.
    monkeypatch.setattr(fashion_mnist, "MIRROR", "http://127.0.0.1:9/")
    return tmp_path


def _fake_apt(folder: Path, monkeypatch: pytest.MonkeyPatch, installs_into: Path | None) -> Path:
    """An ``apt-get`` on PATH that logs its arguments and, for ``install``, copies the real idx files into
    ``installs_into`` as Debian's package does (``None``: the package install fails)."""
    log = folder / "apt.log"
    script = folder / "bin" / "apt-get"
    script.parent.mkdir(parents=True)
    copy = f'mkdir -p "{installs_into}" && cp {DEBIAN}/*.gz "{installs_into}/"' if installs_into else "exit 100"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\ncase "$1" in install) {copy} ;; esac\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(fashion_mnist, "_apt_prefix", lambda: [])  # as root
    return log


def test_a_copy_already_on_the_machine_is_used_without_installing(monkeypatch):
    monkeypatch.setenv("EDGERESNEXT_NO_INSTALL", "1")
    found = fashion_mnist.ensure_fashion_mnist()
    assert all((found / f"{stem}.gz").is_file() or (found / stem).is_file() for stem, _ in fashion_mnist.FILES.values())


def test_missing_dataset_is_installed_with_apt_get_then_read(bare_machine, monkeypatch):
    log = _fake_apt(bare_machine, monkeypatch, installs_into=fashion_mnist.DEBIAN_ROOT)
    found = fashion_mnist.ensure_fashion_mnist(install=True)
    assert found == fashion_mnist.DEBIAN_ROOT
    assert "install -y -q --no-install-recommends dataset-fashion-mnist" in log.read_text()
    assert len(fashion_mnist.load_fashion_mnist("test")) == 10_000  # the sha256 checks pass on what apt put there


def test_no_apt_no_network_is_one_line_with_the_command_to_run(bare_machine, monkeypatch):
    log = _fake_apt(bare_machine, monkeypatch, installs_into=None)
    with pytest.raises(DataError) as info:
        fashion_mnist.ensure_fashion_mnist(install=True)
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install -y -q --no-install-recommends dataset-fashion-mnist exited 100" in message
    assert "download:" in message and "sudo apt-get install -y dataset-fashion-mnist" in message
    assert str(bare_machine / "cache" / "edgeresnext" / "fashion-mnist") in message
    # Unknown package: apt's lists are refreshed once, then the install is tried again.
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["install", "update", "install"]


def test_install_can_be_turned_off(bare_machine, monkeypatch):
    log = _fake_apt(bare_machine, monkeypatch, installs_into=fashion_mnist.DEBIAN_ROOT)
    monkeypatch.setenv("EDGERESNEXT_NO_INSTALL", "1")
    with pytest.raises(DataError, match="sudo apt-get install -y dataset-fashion-mnist"):
        fashion_mnist.ensure_fashion_mnist(install=True)
    assert not log.exists()


def _target(calib: str | None = None, data: str | None = None):
    overrides = {"quant.calib_dir": calib, "data.dataset": data}
    return load_target(TARGETS / "cpu.yaml", overrides=overrides)


def test_build_writes_the_default_calibration_set_only_when_it_reads_it(tmp_path, monkeypatch, calib_dir):
    from edgeresnext.pipeline import prepare_inputs

    monkeypatch.chdir(tmp_path)
    said: list[str] = []
    # The user's own images (CALIB=...): calib_data/ is neither read nor written.
    prepare_inputs(_target(calib=str(calib_dir)), said.append)
    assert not (tmp_path / "calib_data").exists() and said == []
    # The default folder, empty: the build fills it, once, and marks it complete.
    monkeypatch.setattr(calibration, "DEFAULT_COUNT", 20)
    prepare_inputs(_target(), said.append)
    written = sorted((tmp_path / "calib_data").rglob("*.png"))
    assert len(written) == 20 and calibration.calibration_set_complete(tmp_path / "calib_data")
    assert said == ["calibration images: calib_data/ is empty; writing 20 Fashion-MNIST training images"]
    # A default folder that holds images (possibly the user's own) is used as it is, never overwritten.
    (tmp_path / "calib_data" / calibration.COMPLETE_MARK).unlink()
    before = {p: p.stat().st_mtime_ns for p in written}
    prepare_inputs(_target(), said.append)
    assert {p: p.stat().st_mtime_ns for p in written} == before and len(said) == 1
