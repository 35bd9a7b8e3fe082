"""Stage 7, package: plugin sources / library + build record, Triton model repository, trtexec scripts, report,
and last ``manifest.json`` (DESIGN.md contract 3). Works with or without ``onnx/`` and ``trt/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adatsq.core.atomic import atomic_write_text, copy_file
from adatsq.core.layout import OutputLayout
from adatsq.core.schedule import Schedule
from adatsq.export.manifest import sha256_file, write_manifest
from adatsq.export.report import write_report
from adatsq.export.triton import CPU_REPOSITORY, config_model_name, sampler_tables, write_triton_repository
from adatsq.export.trt_build import build_inputs, find_plugin_library, tensorrt_available
from adatsq.export.trtexec import PLUGIN_LIBRARY, PLUGIN_LIBRARY_DYNAMIC, load_io, write_trtexec_scripts
from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE, PLUGIN_FIELDS, PLUGIN_VERSION

__all__ = ["package_files", "package_inputs", "write_package"]

_PLUGIN_SRC = Path(__file__).resolve().parent.parent / "plugins" / "trt"
_KERNEL_SRC = Path(__file__).resolve().parent.parent / "plugins" / "csrc"


def _file_hash(p: Path) -> str | None:
    return sha256_file(p) if p.is_file() else None


def package_inputs(out: OutputLayout) -> dict[str, Any]:
    """Inputs: schedule, weights, calibration cache, ONNX/plan files, plugin sources, and the build key."""
    return {
        "schedule": _file_hash(out.schedule),
        "weights": _file_hash(out.weights),
        "gptq_errors": _file_hash(out.cache / "gptq_errors.json"),
        "build": build_inputs(out),
        "plans": {p.name: _file_hash(p) for _, p in out.plans()},
        "plugin_sources": {
            p.relative_to(_PLUGIN_SRC.parent).as_posix(): _file_hash(p)
            for d in (_PLUGIN_SRC, _KERNEL_SRC)
            for p in _plugin_sources(d)
        },
        "format": 1,
    }


def package_files(out: OutputLayout) -> list[Path]:
    files = [out.manifest, out.report / "report.md", out.triton / "README.md", out.plugins / "BUILD.json"]
    if load_io(out.onnx) is not None:  # the CPU Triton repository runs the ONNX graphs (export/triton.py)
        files.append(out.root / CPU_REPOSITORY / "README.md")
    return files


def _plugin_sources(src: Path) -> list[Path]:
    """The source files under ``src`` that ship with every output directory: no build outputs (judged by the
    path inside ``src``, so a checkout under a folder named ``build`` still ships its sources)."""
    if not src.is_dir():
        return []
    return [
        p
        for p in sorted(src.rglob("*"))
        if p.is_file() and "build" not in p.relative_to(src).parts and p.suffix not in (".o", ".so", ".pyc")
    ]


def _copy_tree(src: Path, dst: Path) -> list[str]:
    copied = []
    for p in _plugin_sources(src):
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(p, target)
        copied.append(target.as_posix())
    return copied


def write_plugins(out_layout: OutputLayout) -> dict[str, Any]:
    """``<out>/plugins/``: the built library when found, else nothing binary; always the sources
    (``src/`` = plugins/trt with the kernels under ``src/csrc``) and ``BUILD.json``."""
    out = out_layout.plugins
    if (out / "src").exists():
        shutil.rmtree(out / "src")
    out.mkdir(parents=True, exist_ok=True)
    sources = _copy_tree(_PLUGIN_SRC, out / "src") if _PLUGIN_SRC.is_dir() else []
    sources += _copy_tree(_KERNEL_SRC, out / "src" / "csrc") if _KERNEL_SRC.is_dir() else []
    lib = find_plugin_library(out_layout)
    libs: list[str] = []
    if lib is not None and lib.is_file():
        for name in (PLUGIN_LIBRARY, PLUGIN_LIBRARY_DYNAMIC):
            cand = lib.parent / name
            if cand.is_file() and cand.resolve() != (out / name).resolve():
                copy_file(cand, out / name)
            if (out / name).is_file():
                libs.append(name)
    record: dict[str, Any] = {
        "built": bool(libs),
        "libraries": libs,
        "plugin": {
            "name": OP_TYPE,
            "namespace": DOMAIN,
            "version": PLUGIN_VERSION,
            "fields": list(PLUGIN_FIELDS),
        },
        "sources": sorted(Path(s).relative_to(out).as_posix() for s in sources),
    }
    if not libs:
        record["reason"] = (
            "not built: no TensorRT headers/libraries and no CUDA compiler on the compile machine"
            if not tensorrt_available()
            else "TensorRT is importable but no built plugin library was found"
        )
        record["how_to_build"] = (
            "cmake -S plugins/src -B plugins/build -DTRT_ROOT=/path/to/TensorRT -DCUDA_ARCH=90a -DADATSQ_KERNELS_DIR=$PWD/plugins/src/csrc "
            f"&& cmake --build plugins/build -j && cp plugins/build/{PLUGIN_LIBRARY} "
            f"plugins/build/{PLUGIN_LIBRARY_DYNAMIC} plugins/"
        )
    record["verified_against_tensorrt"] = False
    atomic_write_text(out / "BUILD.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def write_package(
    out: OutputLayout,
    s: Schedule,
    family: str,
    report: dict[str, Any],
    log: Callable[[str], None],
) -> None:
    """Plugins, trtexec scripts, the Triton repository, the report (``report`` holds the keyword arguments of
    :func:`write_report` besides the layout, schedule and engines) and, last, the manifest."""
    root = out.root
    io = load_io(out.onnx)
    graphs = dict(out.onnx_graphs())
    config_ids = list(range(len(s.configs)))
    if graphs and sorted(graphs) != config_ids:
        log(f"package: onnx/ holds configs {sorted(graphs)}, schedule has {config_ids}")
    write_plugins(out)
    write_trtexec_scripts(root, config_ids, io, step_configs=s.step_configs)
    sigmas, timesteps = sampler_tables(root, s)
    write_triton_repository(
        root,
        config_ids=config_ids,
        step_configs=s.step_configs,
        sigmas=sigmas,
        timesteps=timesteps,
        scheduler=s.sampler.scheduler,
        family=family,
        io=io,
    )
    engines = []
    for k in config_ids:
        onnx = out.onnx_graph(k)
        plan = out.plan(k)
        engines.append(
            {
                "config_id": k,
                "steps": [i for i, c in enumerate(s.step_configs) if c == k],
                "onnx": onnx.relative_to(root).as_posix() if onnx.is_file() else None,
                "plan": plan.relative_to(root).as_posix() if plan.is_file() else None,
                "triton_model": config_model_name(k),
            }
        )
    write_report(out, s, engines=engines, **report)
    write_manifest(
        root,
        model={
            "name": s.model,
            "model_id": s.model_id,
            "revision": s.revision,
            "fingerprint": s.model_fingerprint,
            "real_model": not s.random_weights,
        },
        schedule={
            "steps": s.steps,
            "target_bits": s.target_bits,
            "achieved_bits": s.achieved_bits,
            "configs": len(s.configs),
            "step_configs": list(s.step_configs),
        },
        engines=engines,
    )
