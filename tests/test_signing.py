"""Signed bundles: bundle.sig (OpenSSF model-signing, an elliptic-curve key) over every file, manifest.json included.

manifest.json's sha256 values catch accidents; whoever edits a file can edit its hash too (`reseal`). With a public key
configured (--verify-key, load_bundle(public_key=...), $EDGERESNEXT_BUNDLE_PUBLIC_KEY), such an edit, another key's
signature and a missing signature are refused in one line; without one, unsigned bundles work as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import key_pair, reseal, tiny_onnxruntime_bundle
from jetson_helpers import copy_bundle, jetson_fixtures, run_device_command, snapshot

from edgeresnext.backends import get_backend
from edgeresnext.bundle import BundleError, verify_bundle
from edgeresnext.bundle.signature import PASSWORD_ENV, PUBLIC_KEY_ENV
from edgeresnext.cli import main
from edgeresnext.errors import BackendUnavailable
from edgeresnext.runtime import load_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two key pairs: the build host's ("host") and another ("other", e.g. a device's)."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: key_pair(folder, name) for name in ("host", "other")}


@pytest.fixture(scope="module")
def unsigned_once(tmp_path_factory) -> Path:
    return tiny_onnxruntime_bundle(tmp_path_factory.mktemp("signing-bundle"))


@pytest.fixture
def unsigned(unsigned_once, tmp_path) -> Path:
    return Path(shutil.copytree(unsigned_once, tmp_path / "bundle"))


@pytest.fixture
def signed(unsigned, keys, capsys) -> Path:
    private, _public = keys["host"]
    assert main(["bundle", "sign", str(unsigned), "--sign-key", str(private)]) == 0
    assert capsys.readouterr().out == (
        f"OK {unsigned}: signed with {private}: {unsigned}/bundle.sig covers every file, manifest.json included\n"
    )
    return unsigned


def _refusal(capsys) -> str:
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err  # one line
    return captured.err.strip()


def test_a_signed_bundle_verifies_and_loads_with_its_key_and_not_with_another(signed, keys, capsys):
    _private, public = keys["host"]
    assert main(["bundle", "verify", str(signed), "--verify-key", str(public)]) == 0
    out = capsys.readouterr().out
    assert f"signature: verified with {public}: it covers every file, manifest.json included" in out
    batch = np.zeros((2, 1, 28, 28), np.float32)
    with load_bundle(signed, public_key=public) as clf, load_bundle(signed) as unchecked:
        assert np.array_equal(clf.logits(batch), unchecked.logits(batch))
    _other, wrong = keys["other"]
    assert main(["bundle", "verify", str(signed), "--verify-key", str(wrong)]) == 2
    assert _refusal(capsys).startswith(
        f"edgeresnext bundle: error: {signed}: signature check FAILED: it was not made with the key {wrong} (Key "
        "mismatch: "
    )
    with pytest.raises(BundleError, match=r"signature check FAILED: it was not made with the key"):
        load_bundle(signed, public_key=wrong)


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ("changed", "the bundle was changed after it was signed (changed: labels.txt, manifest.json)"),
        ("added", "the bundle was changed after it was signed (changed: manifest.json; added: notes.txt)"),
    ],
)
def test_a_file_changed_and_resealed_after_signing_fails_the_signature(signed, keys, edit, said, monkeypatch, capsys):
    _private, public = keys["host"]
    if edit == "changed":  # a class renamed: every prediction of that class now says something else
        labels = signed / "labels.txt"
        labels.write_text(labels.read_text().replace("c3\n", "c3 (safe)\n"))
        reseal(signed, "labels.txt")
    else:
        (signed / "notes.txt").write_text("a file that was not there when it was signed\n")
        reseal(signed, "notes.txt")
    assert main(["bundle", "verify", str(signed)]) == 0  # the sha256 values hold: they are the editor's
    assert (
        "signature: NOT CHECKED: the bundle has bundle.sig but no public key is configured" in capsys.readouterr().out
    )
    assert main(["bundle", "verify", str(signed), "--verify-key", str(public)]) == 2
    assert _refusal(capsys) == f"edgeresnext bundle: error: {signed}: signature check FAILED: {said}"
    with pytest.raises(BundleError, match=r"signature check FAILED: the bundle was changed after it was signed"):
        load_bundle(signed, public_key=public)
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(public))  # a device configured once, by its environment
    with pytest.raises(BundleError, match=r"signature check FAILED: the bundle was changed after it was signed"):
        load_bundle(signed)
    image = signed.parent / "image.png"
    image.write_bytes(b"not even read")
    assert main(["bundle", "predict", str(signed), str(image)]) == 2
    assert "signature check FAILED: the bundle was changed after it was signed" in _refusal(capsys)


def test_unsigned_bundles_work_without_a_key_and_are_refused_with_one(unsigned, keys, monkeypatch, capsys):
    assert main(["bundle", "verify", str(unsigned)]) == 0
    assert (
        capsys.readouterr().out.strip().splitlines()[-1] == "signature: none (unsigned bundle; sha256 values checked)"
    )
    load_bundle(unsigned).close()
    _private, public = keys["host"]
    refused = (
        f"{unsigned}: not signed (no bundle.sig), and a public key is configured ({public}): refused; sign it where it "
        f"is built (`edgeresnext build --sign-key KEY`, or `edgeresnext bundle sign {unsigned} --sign-key KEY`)"
    )
    assert main(["bundle", "verify", str(unsigned), "--verify-key", str(public)]) == 2
    assert _refusal(capsys) == f"edgeresnext bundle: error: {refused}"
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(public))
    with pytest.raises(BundleError) as err:
        load_bundle(unsigned)
    assert str(err.value) == refused
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(unsigned / "missing.pub"))
    with pytest.raises(BundleError, match=r"missing\.pub: no such public key file \(named by --verify-key"):
        load_bundle(unsigned)


def test_a_bad_signing_key_is_refused_before_anything_is_signed(unsigned, keys, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "keys"
    folder.mkdir()
    locked, public = key_pair(folder, "locked", password=b"s3cret")
    before = snapshot(unsigned)
    for key, said in (
        (folder / "none.key", "no such private key file (--sign-key)"),
        (keys["host"][1], "not a readable PEM private key (--sign-key"),  # a public key
        (locked, "not a readable PEM private key (--sign-key; an encrypted key's password comes from"),
    ):
        assert main(["bundle", "sign", str(unsigned), "--sign-key", str(key)]) == 2
        assert f"error: {key}: {said}" in _refusal(capsys)
    assert snapshot(unsigned) == before
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    assert main(["bundle", "sign", str(unsigned), "--sign-key", str(locked)]) == 0
    assert main(["bundle", "verify", str(unsigned), "--verify-key", str(public)]) == 0


# ------------------------------------------------------------------------------------------ Jetson: the device step
jetson, bin_dir = jetson_fixtures("jetson")


@pytest.fixture
def signed_jetson(jetson, keys, tmp_path, capsys) -> Path:
    bundle = copy_bundle(jetson, tmp_path / "device" / "bundle")
    assert main(["bundle", "sign", str(bundle), "--sign-key", str(keys["host"][0])]) == 0
    capsys.readouterr()
    return bundle


def test_the_device_step_refuses_a_tampered_or_unsigned_bundle_before_it_runs_anything(
    signed_jetson, jetson, keys, bin_dir, tmp_path, monkeypatch, capsys
):
    _private, public = keys["host"]
    script = signed_jetson / "kit" / "build_engine.sh"
    script.write_text(script.read_text().replace("set -euo pipefail\n", f"set -euo pipefail\ntouch {tmp_path}/m\n"))
    reseal(signed_jetson, "kit/build_engine.sh")
    before = snapshot(signed_jetson)
    build = ["bundle", "build-engine", str(signed_jetson), "--trtexec", str(bin_dir / "trtexec")]
    assert main([*build, "--verify-key", str(public)]) == 2
    assert _refusal(capsys) == (
        f"edgeresnext bundle: error: {signed_jetson}: signature check FAILED: the bundle was changed after it was "
        "signed (changed: kit/build_engine.sh, manifest.json)"
    )
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(public))  # compile --on-device checks with the configured key too
    assert main(["compile", "--on-device", str(signed_jetson)]) == 2
    assert "signature check FAILED: the bundle was changed after it was signed" in _refusal(capsys)
    assert snapshot(signed_jetson) == before
    unsigned = copy_bundle(jetson, tmp_path / "unsigned" / "bundle")
    assert main(["bundle", "build-engine", str(unsigned), "--trtexec", str(bin_dir / "trtexec")]) == 2
    assert f"{unsigned}: not signed (no bundle.sig), and a public key is configured" in _refusal(capsys)


def test_the_device_step_signs_again_with_a_device_key(signed_jetson, keys, bin_dir, capsys):
    host, device = keys["host"], keys["other"]
    build = ["bundle", "build-engine", str(signed_jetson), "--trtexec", str(bin_dir / "trtexec")]
    assert main([*build, "--verify-key", str(host[1]), "--sign-key", str(device[0])]) == 0
    said = f"signature: signed with {device[0]}: {signed_jetson}/bundle.sig covers every file, the engine included"
    assert capsys.readouterr().out.strip().splitlines()[-1] == said
    assert main(["bundle", "verify", str(signed_jetson), "--verify-key", str(device[1])]) == 0
    assert "signature: verified with" in capsys.readouterr().out
    if get_backend("tensorrt").available() is not None:  # the signature holds; what is missing here is TensorRT
        with pytest.raises(BackendUnavailable, match="TensorRT engines run with the tensorrt and cuda-python"):
            load_bundle(signed_jetson, public_key=device[1])
    with pytest.raises(BundleError, match="it was not made with the key"):
        load_bundle(signed_jetson, public_key=host[1])
    assert main(["bundle", "verify", str(signed_jetson), "--verify-key", str(host[1])]) == 2  # the device signed it
    assert "it was not made with the key" in _refusal(capsys)
    assert main(build) == 0  # a rebuild without a key: the signature stays, and says what it covers no longer
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"signature: NOT renewed: {signed_jetson}/bundle.sig covers the bundle as it was before this step, not the "
        f"engine; sign the sealed bundle here with `edgeresnext bundle sign {signed_jetson} --sign-key KEY`"
    )
    assert main(["bundle", "verify", str(signed_jetson), "--verify-key", str(device[1])]) == 2
    assert "bundle.sig covers this bundle as it was before the device step sealed the engine" in _refusal(capsys)


def test_the_device_step_without_edgeresnext_says_what_it_could_not_check(signed_jetson, keys, bin_dir, capsys):
    """kit/build_engine.sh (standard library only) cannot check bundle.sig: it says so, and then the signature covers
    the bundle as the host signed it, not the engine, which verify says."""
    done = run_device_command(signed_jetson, bin_dir)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"seal.py: NOT CHECKED: {signed_jetson.resolve()}/bundle.sig: this bundle is signed, but seal.py (Python's "
        "standard library only) cannot check signatures: it checked each file's sha256 against manifest.json, which "
        "catches accidents and incomplete copies, not someone who edits a file and its hash; check the signature "
        f"where edgeresnext is installed (`edgeresnext bundle verify {signed_jetson.resolve()} --verify-key "
        "KEY.pub`). The engine sealed now is not covered by that signature"
    )
    verify_bundle(signed_jetson)  # bundle.sig is the one file the manifest cannot list
    host, device = keys["host"], keys["other"]
    assert main(["bundle", "verify", str(signed_jetson), "--verify-key", str(host[1])]) == 2
    assert _refusal(capsys) == (
        f"edgeresnext bundle: error: {signed_jetson}: signature check FAILED: bundle.sig covers this bundle as it "
        "was before the device step sealed the engine kit/model.engine into it (changed: manifest.json; added: "
        "kit/build_engine.log, kit/model.deepstream.engine, kit/model.engine, kit/model.engine.json, "
        "kit/timing.cache): no signature covers the engine. Sign the sealed bundle on the device (`edgeresnext bundle "
        f"sign {signed_jetson} --sign-key KEY`, or `bundle build-engine --sign-key KEY`) and check it with that key's "
        "public key"
    )
    sign = ["bundle", "sign", str(signed_jetson), "--sign-key", str(device[0])]
    assert main([*sign, "--verify-key", str(host[1])]) == 2  # the signature it has must hold before it is replaced
    assert "no signature covers the engine" in _refusal(capsys)
    assert main(sign) == 0
    assert main(["bundle", "verify", str(signed_jetson), "--verify-key", str(device[1])]) == 0
    assert json.loads((signed_jetson / "manifest.json").read_text())["artifacts"][0]["kind"] == "engine"
