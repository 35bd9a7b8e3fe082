"""Atomic writes give the file the mode an ordinary ``open`` would (0o666 less the umask), not the 0o600 of
mkstemp (or of a writer such as safetensors' save_file)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adatsq.core.atomic import atomic_write, atomic_write_bytes, atomic_write_text, current_umask


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], indirect=True)
def test_atomic_write_respects_umask(tmp_path: Path, umask: int) -> None:
    assert current_umask() == umask
    atomic_write_text(tmp_path / "a.json", "{}\n")
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"x")
    # a writer that replaces the file it is given (safetensors 0.8 leaves it 0o600)
    atomic_write(tmp_path / "c.safetensors", lambda p: save_file({"w": torch.zeros(2)}, str(p)))
    for path in (tmp_path / "a.json", tmp_path / "sub" / "b.bin", tmp_path / "c.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "a.json",
        "b.bin",
        "c.safetensors",
        "sub",
    ]  # no temp file left
