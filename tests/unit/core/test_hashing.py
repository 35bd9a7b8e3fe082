"""core.hashing: file_digest by contents, not by path; a large file by its size and its first and last MiB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import adatsq.core.hashing as hashing


def test_same_contents_same_digest_other_contents_another(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights" * 100)
    b.write_bytes(b"weights" * 100)
    assert hashing.file_digest(a) == hashing.file_digest(b)
    b.write_bytes(b"weightz" * 100)
    os.utime(b, ns=(1, 1))  # a rewrite is seen even within one mtime tick: size or mtime must differ
    assert hashing.file_digest(a) != hashing.file_digest(b)


def test_a_large_file_is_read_at_its_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "WHOLE_FILE_BYTES", 1024)
    monkeypatch.setattr(hashing, "_EDGE", 64)
    f = tmp_path / "shard.safetensors"
    f.write_bytes(bytes(range(256)) * 16)  # 4 KiB > WHOLE_FILE_BYTES
    first = hashing.file_digest(f)
    f.write_bytes(bytes([255]) + bytes(range(1, 256)) + bytes(range(256)) * 15)  # the head changed
    os.utime(f, ns=(2, 2))
    assert hashing.file_digest(f) != first
