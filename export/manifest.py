"""``manifest.json``: what an output directory holds (DESIGN.md contract 3), written last by the package stage.

The runner reads only the output directory and calls :func:`verify_manifest` before loading anything: every
listed file must exist with the recorded size and sha256. The manifest lists the deployable artifacts
(schedule, weights, transformer config, ONNX graphs and their external data, engines, plugin library or its
sources, Triton repository, trtexec scripts, report), never ``cache/`` or ``.adatsq/``.

Schema (version :data:`MANIFEST_VERSION`)::

    {
      "schema_version": 1,
      "model": {"name", "model_id", "revision", "fingerprint", "real_model"},   # real_model: false for
                                                                             # --random-weights
      "schedule": {"steps", "target_bits", "achieved_bits", "configs", "step_configs"},
      "engines": [{"config_id", "onnx": "onnx/config_00.onnx" | null, "plan": "trt/config_00.plan" | null}],
      "versions": {"adatsq", "python", "torch", "onnx", "onnxruntime", "tensorrt"},   # null when absent
      "files": {"<relative posix path>": {"sha256": "...", "size": 123}, ...}
    }
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adatsq.core.atomic import atomic_write_text

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "collect_files",
    "library_versions",
    "load_manifest",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: Top-level entries of the output directory that the manifest covers (files or folders).
MANIFEST_ENTRIES = (
    "schedule.json",
    "weights.safetensors",
    "transformer_config.json",
    "compile_config.json",
    "onnx",
    "trt",
    "plugins",
    "triton",
    "triton_cpu",
    "trtexec",
    "report",
    "runtime",
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights can be tens of GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _hasher() -> Callable[[Path], str]:
    """sha256 by resolved path, so a symlinked file (the root weights.safetensors → onnx/) is read once."""
    seen: dict[Path, str] = {}

    def digest(path: Path) -> str:
        real = path.resolve()
        if real not in seen:
            seen[real] = sha256_file(real)
        return seen[real]

    return digest


def collect_files(root: Path, entries: Iterable[str] = MANIFEST_ENTRIES) -> list[str]:
    """Relative posix paths of the regular files under ``entries`` of ``root`` (symlinks are followed only
    when they resolve inside ``root``; temporary files of atomic writes are skipped)."""
    root = Path(root)
    out: list[str] = []
    for entry in entries:
        p = root / entry
        if p.is_file():
            out.append(entry)
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or f.name.startswith(".") or f.name.endswith(".tmp"):
                    continue
                if f.is_symlink() and not f.resolve().is_relative_to(root.resolve()):
                    continue
                out.append(f.relative_to(root).as_posix())
    return sorted(set(out))


def _version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:  # e.g. tensorrt installed from a wheel under another distribution name
        return str(getattr(importlib.import_module(module), "__version__", None) or "") or None
    except Exception:  # noqa: BLE001 - an absent or broken optional library is reported as null
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that produced the artifacts; ``None`` for an absent one (tensorrt here)."""
    from importlib.util import find_spec

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("adatsq", "torch", "onnx", "onnxruntime", "diffusers", "safetensors"):
        versions[name] = _version(name) if find_spec(name) is not None else None
    versions["tensorrt"] = _version("tensorrt") if find_spec("tensorrt") is not None else None
    return versions


def write_manifest(
    root: Path,
    *,
    model: dict[str, Any],
    schedule: dict[str, Any],
    engines: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash the artifacts under ``root`` and write ``root/manifest.json`` atomically; returns the manifest."""
    root = Path(root)
    digest = _hasher()
    files = {
        rel: {"sha256": digest(root / rel), "size": (root / rel).stat().st_size}
        for rel in collect_files(root)
    }
    manifest: dict[str, Any] = {
        "schema_version": MANIFEST_VERSION,
        "model": model,
        "schedule": schedule,
        "engines": engines,
        "versions": library_versions(),
        "files": files,
    }
    if extra:
        manifest.update(extra)
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load_manifest(root: Path) -> dict[str, Any]:
    """Read ``root/manifest.json``; raises ``FileNotFoundError`` / ``ValueError`` when absent or malformed."""
    path = Path(root) / MANIFEST_NAME
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "files" not in data:
        raise ValueError(f"{path} is not an adatsq manifest (no 'files')")
    return data


def verify_manifest(root: str | Path, *, check_hashes: bool = True) -> list[str]:
    """Check an output directory against its manifest; returns a list of problems (empty = all good).

    Each problem is one readable line naming the file: missing manifest, unsupported schema version, a
    listed file that is missing, a size mismatch, a sha256 mismatch (skipped with ``check_hashes=False``,
    which checks existence and sizes only, for a fast start-up check).
    """
    root = Path(root)
    try:
        data = load_manifest(root)
    except FileNotFoundError:
        return [
            f"{root / MANIFEST_NAME}: missing (the package stage writes it last; was the compile finished?)"
        ]
    except (ValueError, json.JSONDecodeError) as exc:
        return [f"{root / MANIFEST_NAME}: unreadable ({exc})"]
    problems: list[str] = []
    digest = _hasher()
    version = data.get("schema_version")
    if version != MANIFEST_VERSION:
        problems.append(
            f"manifest.json: schema_version {version!r} is not supported (expected {MANIFEST_VERSION})"
        )
        return problems
    for rel, rec in sorted(data["files"].items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in manifest.json but missing")
            continue
        size = path.stat().st_size
        if size != rec.get("size"):
            problems.append(f"{rel}: size {size} ≠ {rec.get('size')} recorded in manifest.json")
            continue
        if check_hashes and digest(path) != rec.get("sha256"):
            problems.append(f"{rel}: sha256 differs from manifest.json (file changed after packaging)")
    return problems
