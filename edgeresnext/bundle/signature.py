"""Signed bundles: ``bundle.sig``, made and checked with the OpenSSF ``model-signing`` library (``pip install
'edgeresnext[sign]'``), key-based and offline.

What it covers: every file of the bundle folder, ``manifest.json`` included (model-signing hashes each file with
sha256 and signs the list as an in-toto statement in a DSSE envelope, written as a Sigstore bundle); only
``bundle.sig`` itself is left out. A file added, removed or changed after signing fails the check, whatever
``manifest.json`` says about it.

Why: ``manifest.json``'s sha256 values catch accidents (a flipped bit, a truncated or incomplete copy, the wrong
file), but whoever can edit a file can edit its hash too. A signature made with a private key that person does not
hold adds authenticity: the bundle is the one the key's holder signed.

Keys: elliptic-curve keys in PEM (P-256, P-384 or P-521; ``openssl ecparam -name prime256v1 -genkey -noout -out
bundle.key`` and ``openssl ec -in bundle.key -pubout -out bundle.pub``). The private key is named on the command line
(``--sign-key``), never in a target file (a target file travels between people; which key signs is the signer's
choice); its password, if it has one, comes from ``$EDGERESNEXT_SIGN_KEY_PASSWORD``. The public key is
``--verify-key``, ``load_bundle(..., public_key=...)`` or ``$EDGERESNEXT_BUNDLE_PUBLIC_KEY``; when one is configured,
a bundle without a signature, or whose signature does not match, is refused.

Only the standard library at import time: model-signing is imported when a key is used.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

from edgeresnext.atomic import atomic_path, sha256_file
from edgeresnext.bundle.manifest import MANIFEST, SIGNATURE, BundleError, verify_bundle
from edgeresnext.bundle.model import ArtifactEntry, Manifest

logger = logging.getLogger(__name__)

PUBLIC_KEY_ENV = "EDGERESNEXT_BUNDLE_PUBLIC_KEY"
PASSWORD_ENV = "EDGERESNEXT_SIGN_KEY_PASSWORD"  # noqa: S105 -- the variable's name, not a password
_KEY_WAYS = f"--verify-key, load_bundle(..., public_key=...) or ${PUBLIC_KEY_ENV}"


def _model_signing() -> Any:
    try:
        import model_signing
    except ImportError as err:
        raise BundleError(
            f"signed bundles are made and checked with the model-signing package, which is not installed ({err}); "
            "pip install 'edgeresnext[sign]'"
        ) from err
    return model_signing


def _hashing(model_signing: Any) -> Any:
    """Every file but the signature, git's file names included (model-signing leaves those out by default)."""
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def _said(err: BaseException) -> str:
    return " ".join(str(err).split())[:400]


def public_key_from(public_key: str | os.PathLike[str] | None) -> Path | None:
    """The public key to check bundles with: ``public_key``, else ``$EDGERESNEXT_BUNDLE_PUBLIC_KEY``, else None."""
    chosen = public_key if public_key is not None else os.environ.get(PUBLIC_KEY_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen)
    if not path.is_file():
        raise BundleError(f"{path}: no such public key file (named by {_KEY_WAYS}); expected a PEM public key")
    return path


def private_key_password(private_key: str | os.PathLike[str]) -> bytes | None:
    """The password of ``private_key`` (``$EDGERESNEXT_SIGN_KEY_PASSWORD``), after checking the key can be read: a
    wrong key path stops a build before its first stage, not after its last."""
    _model_signing()  # brings cryptography
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(private_key)
    password = os.environ[PASSWORD_ENV].encode() if os.environ.get(PASSWORD_ENV) else None
    if not path.is_file():
        raise BundleError(f"{path}: no such private key file (--sign-key); expected a PEM elliptic-curve private key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password)
    except (ValueError, TypeError) as err:
        raise BundleError(
            f"{path}: not a readable PEM private key (--sign-key; an encrypted key's password comes from "
            f"${PASSWORD_ENV}): {_said(err)}"
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise BundleError(f"{path}: a {type(key).__name__}; --sign-key takes an elliptic-curve key (P-256/384/521)")
    return password


def sign_bundle(
    bundle_dir: str | os.PathLike[str], private_key: str | os.PathLike[str], password: bytes | None = None
) -> Path:
    """Sign ``bundle_dir`` with ``private_key``: ``bundle.sig`` over every other file. The bundle must match its
    manifest first (a bundle that does not is never signed). Returns the signature's path."""
    model_signing = _model_signing()
    bundle_dir = Path(bundle_dir)
    verify_bundle(bundle_dir)
    # bytes, though model-signing 1.1.1 annotates str: it hands the password to cryptography, which takes bytes only
    signer = model_signing.signing.Config().use_elliptic_key_signer
    config = signer(private_key=Path(private_key), password=password)
    with atomic_path(bundle_dir / SIGNATURE) as tmp:  # hashed before it is written; renamed into place when complete
        try:
            config.set_hashing_config(_hashing(model_signing)).sign(bundle_dir, tmp)
        except (ValueError, TypeError, OSError) as err:
            raise BundleError(f"{bundle_dir}: cannot sign with {private_key}: {_said(err)}") from err
    logger.info("signed %s with %s", bundle_dir, private_key)
    return bundle_dir / SIGNATURE


def _signed_files(signature: Path) -> dict[str, str]:
    """The files and sha256 values the signature lists (read only to explain a mismatch model-signing found after
    checking the signature itself)."""
    envelope = json.loads(signature.read_text(encoding="utf-8"))["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return {item["name"]: item["digest"] for item in statement["predicate"]["resources"]}


def _mismatch(bundle_dir: Path, manifest: Manifest) -> str:
    """What changed since signing, in words: the device step's additions, or edits."""
    try:
        signed = _signed_files(bundle_dir / SIGNATURE)
    except (OSError, ValueError, KeyError, TypeError):
        return "the bundle's files differ from the ones it lists"
    now = manifest.sha256()
    now[MANIFEST] = sha256_file(bundle_dir / MANIFEST)
    changed = sorted(name for name in signed.keys() & now.keys() if signed[name] != now[name])
    added, missing = sorted(now.keys() - signed.keys()), sorted(signed.keys() - now.keys())
    listed = "; ".join(
        f"{what}: {', '.join(names)}"
        for what, names in (("changed", changed), ("added", added), ("missing", missing))
        if names
    )
    primary = manifest.primary
    device_files = set(primary.files) if _built_on_device(primary) else set()
    if device_files and set(added) <= device_files and set(changed) <= device_files | {MANIFEST} and not missing:
        return (
            f"{SIGNATURE} covers this bundle as it was before the device step sealed the engine {primary.path} "
            f"into it ({listed}): no signature covers the engine. Sign the sealed bundle on the device "
            f"(`edgeresnext bundle sign {bundle_dir} --sign-key KEY`, or `bundle build-engine --sign-key KEY`) and "
            "check it with that key's public key"
        )
    return f"the bundle was changed after it was signed ({listed})"


def _built_on_device(artifact: ArtifactEntry) -> bool:
    """Whether the manifest entry ``artifact`` was built by a device step (its backend reads a device check in it)."""
    from edgeresnext.backends import backend_facts

    backend = backend_facts(artifact.backend)
    return backend is not None and backend.device_check(artifact.to_json()) is not None


def check_signature(bundle_dir: str | os.PathLike[str], public_key: str | os.PathLike[str]) -> Manifest:
    """Check ``bundle_dir`` against its manifest (:func:`verify_bundle`), then its signature with ``public_key``.
    Returns the manifest; raises :class:`BundleError` in one line: no signature, another key's, or files changed."""
    bundle_dir, public_key = Path(bundle_dir), Path(public_key)
    manifest = verify_bundle(bundle_dir)
    signature = bundle_dir / SIGNATURE
    if not signature.is_file() or signature.is_symlink():
        raise BundleError(
            f"{bundle_dir}: not signed (no {SIGNATURE}), and a public key is configured ({public_key}): refused; sign "
            f"it where it is built (`edgeresnext build --sign-key KEY`, or `edgeresnext bundle sign {bundle_dir} "
            "--sign-key KEY`)"
        )
    model_signing = _model_signing()
    try:
        config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
        config.set_hashing_config(_hashing(model_signing)).verify(bundle_dir, signature)
    except Exception as err:  # bundle.sig and the key are untrusted input: whatever the library raises for them
        # (its error types are not documented) is a refusal, never a traceback
        said = _said(err)
        if said.startswith("Signature mismatch"):  # the signature itself was valid for this key: files differ
            said = _mismatch(bundle_dir, manifest)
        elif said.startswith("Key mismatch"):
            said = f"it was not made with the key {public_key} ({said})"
        raise BundleError(f"{bundle_dir}: signature check FAILED: {said}") from err
    return manifest


def signature_status(bundle_dir: str | os.PathLike[str], public_key: Path | None) -> str:
    """One line for ``bundle verify``: what was checked about the signature."""
    signed = (Path(bundle_dir) / SIGNATURE).is_file()
    if public_key is not None:
        return f"signature: verified with {public_key}: it covers every file, {MANIFEST} included"
    if signed:
        return (
            f"signature: NOT CHECKED: the bundle has {SIGNATURE} but no public key is configured ({_KEY_WAYS}); only "
            "the sha256 values were checked, which catch accidents, not edits"
        )
    return "signature: none (unsigned bundle; sha256 values checked)"
