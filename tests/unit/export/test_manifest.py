"""Manifest hashing: a symlinked artifact (root weights.safetensors → onnx/weights.safetensors) is read once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adatsq.export import manifest


def test_symlinked_weights_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "onnx").mkdir()
    real = tmp_path / "onnx" / "weights.safetensors"
    real.write_bytes(os.urandom(4096))
    (tmp_path / "weights.safetensors").symlink_to(Path("onnx") / "weights.safetensors")
    (tmp_path / "schedule.json").write_text("{}")
    reads: list[Path] = []
    original = manifest.sha256_file

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        reads.append(Path(path))
        return original(path, chunk)

    monkeypatch.setattr(manifest, "sha256_file", counting)
    written = manifest.write_manifest(tmp_path, model={}, schedule={}, engines=[])
    files = written["files"]
    assert files["weights.safetensors"] == files["onnx/weights.safetensors"]
    assert files["weights.safetensors"]["sha256"] == original(real)
    assert sorted(reads) == sorted({real.resolve(), (tmp_path / "schedule.json").resolve()})
    reads.clear()
    assert manifest.verify_manifest(tmp_path) == []
    assert len(reads) == len(set(reads)) == 2  # once per distinct file, not per listed path
    real.write_bytes(os.urandom(4096))  # same size, other bytes: both listed paths are reported
    problems = manifest.verify_manifest(tmp_path)
    assert {p.split(":")[0] for p in problems} == {"weights.safetensors", "onnx/weights.safetensors"}
