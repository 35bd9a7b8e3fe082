"""Stable digests of JSON-able values and of files: the cache keys of stages and of cached results."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["file_digest", "stable_hash"]

#: files up to this size are hashed whole; larger ones (checkpoint shards of GBs) by size, first and last MiB
WHOLE_FILE_BYTES = 64 << 20
_EDGE = 1 << 20


def stable_hash(obj: Any) -> str:
    """SHA-256 of ``obj`` as sorted-key JSON (non-JSON leaves by ``str``): equal inputs, equal keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's contents (over ``WHOLE_FILE_BYTES``: of its size and first and last MiB, enough to
    tell retrained weights apart without reading GBs), remembered per (path, size, mtime)."""
    st = Path(path).stat()
    return _file_digest(Path(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_digest(path: Path, size: int, _mtime_ns: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= WHOLE_FILE_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()
