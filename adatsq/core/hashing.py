"""Stable digests of JSON-able values: the cache keys of stages and of cached results."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["stable_hash"]


def stable_hash(obj: Any) -> str:
    """SHA-256 of ``obj`` as sorted-key JSON (non-JSON leaves by ``str``): equal inputs, equal keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
