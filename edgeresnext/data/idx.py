"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip), with every field checked."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from edgeresnext.errors import DataError

_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: str | os.PathLike[str]) -> bytes:
    """The uncompressed bytes of an idx file (``.gz`` is decompressed)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read idx file ({err.strerror})") from err
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip ({err})") from err
    return raw


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse idx bytes into an array; ``source`` names the file in errors."""
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes is too short for an idx header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _DTYPES or not 1 <= ndim <= 4:
        raise DataError(
            f"{source}: not an idx file (magic {data[:4].hex()}; expected 0000 then a type code in "
            f"{sorted(hex(t) for t in _DTYPES)} and 1-4 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header
    if payload != expected:
        raise DataError(
            f"{source}: idx header says {dims} ({expected} bytes) but the file holds {payload} bytes"
            + (" (truncated)" if payload < expected else " (trailing data)")
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    return parse_idx(read_idx_bytes(path), str(path))
