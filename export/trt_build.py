"""Stage 6, build: one TensorRT engine per configuration, ``onnx/config_NN.trt.onnx`` → ``trt/config_NN.plan``.

The engines are built from the TensorRT twins (export/trt_graph.py; io.json ``trt_graphs``): weights are
static-shape network inputs (one device copy shared by all engines at run time), constants folded, no
sequence ops. When the ``tensorrt`` Python module is importable (imported lazily here only; importing adatsq
never needs it): load the QLinear plugin library, check the creator ``adatsq::QLinear`` v1 is registered,
then per graph parse with the ONNX parser into a strongly typed network (parser flag
``ENABLE_PLUGIN_OVERRIDE`` where the version has it), add one optimization profile with the min/opt/max
shapes of ``onnx/io.json`` for the data inputs (the weight inputs are static), build with one timing cache
shared by all configurations, and check with the engine inspector that the engine holds as many plugin
layers (by layer TYPE, ``LayerType`` "PluginV3", not by name) as the graph has QLinear nodes, so a silent
fallback to the function body (plugin not loaded or not preferred) fails the build instead of shipping a
slow fake-quant engine (reference §7).

When TensorRT is absent: one line says so, ``trt/BUILD_SKIPPED.txt`` records why and the exact trtexec
commands that build the same engines on a TensorRT machine, and the stage returns cleanly.

**Not run against a real TensorRT** (none can be installed where this was written): the calls follow the
documented Python API of TensorRT 10.x/11.x (reference/tensorrt.md §1–§3, §7, §10); the unit tests only check
our call sequence against a recording fake module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from adatsq.core.atomic import atomic_write_bytes, atomic_write_text
from adatsq.core.errors import CompileError
from adatsq.core.layout import OutputLayout, config_tag
from adatsq.core.schedule import Schedule
from adatsq.export.trtexec import (
    PLUGIN_LIBRARY,
    PLUGIN_LIBRARY_DYNAMIC,
    config_build_command,
    count_qlinear_nodes,
    engine_graph,
    load_io,
    profile_shapes,
)
from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE, PLUGIN_VERSION

__all__ = [
    "SKIP_RECORD",
    "Progress",
    "build_engines",
    "build_files",
    "build_inputs",
    "count_plugin_layers",
    "engine_graphs",
    "find_plugin_library",
    "tensorrt_available",
]

SKIP_RECORD = "BUILD_SKIPPED.txt"
BUILD_RECORD = "build.json"
_REPO_PLUGIN_BUILD = Path(__file__).resolve().parent.parent / "plugins" / "trt" / "build"


def tensorrt_available() -> bool:
    """Whether ``import tensorrt`` would find a module (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def find_plugin_library(out: OutputLayout | None = None) -> Path | None:
    """The plugin library to load: ``$ADATSQ_TRT_PLUGIN``, else ``<out>/plugins/``, else the repository's
    ``plugins/trt/build/`` (dynamic-registration variant preferred for ``load_library``)."""
    env = os.environ.get("ADATSQ_TRT_PLUGIN")
    if env:
        return Path(env)
    dirs = ([out.plugins] if out is not None else []) + [_REPO_PLUGIN_BUILD]
    for d in dirs:
        for name in (PLUGIN_LIBRARY_DYNAMIC, PLUGIN_LIBRARY):
            if (d / name).is_file():
                return d / name
    return None


def engine_graphs(out: OutputLayout) -> list[tuple[int, Path]]:
    """``(config id, graph)`` to build: per ``onnx/config_NN.onnx`` present, the twin io.json names (else the
    graph itself, for an export that wrote no twins)."""
    io = load_io(out.onnx)
    return [(k, out.root / engine_graph(k, io)) for k, _ in out.onnx_graphs()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_inputs(out: OutputLayout) -> dict[str, Any]:
    """Inputs of the build: the ONNX graphs and io.json (hashes; weights are external data whose hash the
    export records in the graphs' own keys), the plugin library, and the TensorRT version (None if absent,
    so installing TensorRT later re-runs the stage)."""
    trt_version = None
    if tensorrt_available():
        from adatsq.export.manifest import library_versions

        trt_version = library_versions()["tensorrt"] or "unknown"
    lib = find_plugin_library(out)
    return {
        "onnx": {p.name: _sha(p) for _, p in engine_graphs(out) if p.is_file()},
        "io": _sha(out.io) if out.io.exists() else None,
        "plugin": _sha(lib) if lib is not None and lib.is_file() else None,
        "tensorrt": trt_version,
    }


def build_files(out: OutputLayout) -> list[Path]:
    """The files the stage leaves: the skip record without TensorRT, else one plan per graph."""
    if not tensorrt_available():
        return [out.trt / SKIP_RECORD]
    return [out.plan(k) for k, _ in engine_graphs(out)] + [out.trt / BUILD_RECORD]


Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]


def build_engines(
    out: OutputLayout,
    schedule: Schedule,
    compile_command: str,
    log: Callable[[str], None],
    progress: Progress,
) -> None:
    """Build every engine (TensorRT present) or write the skip record (absent). ``compile_command`` is the
    adatsq-compile command line (without ``-o``) that the skip record tells the user to re-run."""
    out.trt.mkdir(parents=True, exist_ok=True)
    if not tensorrt_available():
        log(
            "build: TensorRT is not installed here; skipping engine build "
            f"(trt/{SKIP_RECORD} has the trtexec commands to build on a TensorRT machine)"
        )
        write_skip_record(
            out,
            schedule,
            compile_command,
            "the Python module `tensorrt` is not importable on the compile machine",
        )
        return
    graphs = engine_graphs(out)
    if not graphs:
        log("build: no onnx/config_NN.onnx to build (run the export stage first); nothing built")
        write_skip_record(
            out, schedule, compile_command, "no ONNX graphs in onnx/ (the export stage has not produced any)"
        )
        return
    lib = find_plugin_library(out)
    if lib is None or not lib.is_file():
        raise CompileError(
            "TensorRT is installed but the QLinear plugin library was not found: build plugins/trt "
            f"(cmake -S plugins/trt -B plugins/trt/build -DTRT_ROOT=/path/to/TensorRT && cmake --build "
            f"plugins/trt/build) or set ADATSQ_TRT_PLUGIN=/path/to/{PLUGIN_LIBRARY_DYNAMIC}; without it "
            f"TensorRT would silently build the slow fake-quant function body"
        )
    record = _build_with_tensorrt(out, graphs, lib, progress)
    (out.trt / SKIP_RECORD).unlink(missing_ok=True)
    atomic_write_text(out.trt / BUILD_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")


# --- TensorRT path (documented API; NOT run here) ---------------------------------------------------------------
def count_plugin_layers(layer_info: Any) -> int:
    """Plugin layers in an engine-inspector JSON (``LayerInformationFormat.JSON`` at DETAILED verbosity:
    ``{"Layers": [{"Name", "LayerType": "PluginV3", ...}]}``), counted by layer TYPE: a layer whose
    ``LayerType`` starts with "Plugin". Layer names are not read (TensorRT names layers after nodes and
    fusions, and no name need contain "QLinear"); QLinear is the only plugin op our graphs hold
    (export/trt_check.py). Layers given as plain strings (lower verbosity) carry no type and count 0.
    The "PluginV3" spelling is Polygraphy's ``LayerType`` key read on our side; not seen from a real engine."""
    info = json.loads(layer_info) if isinstance(layer_info, (str, bytes)) else layer_info
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    return sum(
        1
        for layer in layers
        if isinstance(layer, dict) and str(layer.get("LayerType", "")).startswith("Plugin")
    )


def _load_plugin(trt: Any, builder: Any, lib: Path) -> None:
    """Register the plugin creators before any parsing. The dynamic variant (``getCreators`` only) goes
    through ``IPluginRegistry.load_library``; the static variant is dlopened (static registration)."""
    if lib.name == PLUGIN_LIBRARY:
        import ctypes

        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    else:
        handle = builder.get_plugin_registry().load_library(str(lib))
        if handle is None:
            raise CompileError(f"TensorRT could not load the plugin library {lib}")
    creator = builder.get_plugin_registry().get_creator(OP_TYPE, PLUGIN_VERSION, DOMAIN)
    if creator is None:
        raise CompileError(
            f"{lib} loaded but no plugin creator {DOMAIN}::{OP_TYPE} v{PLUGIN_VERSION} is "
            f"registered (namespace mismatch? reference §10)"
        )


def _build_with_tensorrt(
    out: OutputLayout, graphs: list[tuple[int, Path]], lib: Path, progress: Progress
) -> dict[str, Any]:
    trt = importlib.import_module("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    _load_plugin(trt, builder, lib)
    io = load_io(out.onnx)
    shapes = profile_shapes(io) if io is not None else {}
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = (1 << int(strongly)) if strongly is not None else 0  # TRT 11: always strongly typed
    cache_path = out.trt / "timing.cache"
    probe = builder.create_builder_config()
    cache = probe.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    runtime = trt.Runtime(logger)
    record: dict[str, Any] = {
        "tensorrt": getattr(trt, "__version__", None),
        "plugin_library": str(lib),
        "plugin_sha256": _sha(lib),
        "strongly_typed_flag": strongly is not None,
        "engines": [],
    }
    with progress("build TensorRT engines", len(graphs)) as advance:
        for k, path in graphs:
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, logger)
            override = getattr(getattr(trt, "OnnxParserFlag", None), "ENABLE_PLUGIN_OVERRIDE", None)
            if override is not None:
                parser.set_flag(override)
            if not parser.parse_from_file(str(path)):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise CompileError(f"TensorRT could not parse {path.name}: {errors}")
            config = builder.create_builder_config()
            config.set_timing_cache(cache, False)
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
            profile = builder.create_optimization_profile()
            for i in range(network.num_inputs):  # data inputs; the weight inputs are static
                name = network.get_input(i).name
                if name in shapes:
                    lo, mid, hi = shapes[name]
                    profile.set_shape(name, lo, mid, hi)
            config.add_optimization_profile(profile)
            plan = builder.build_serialized_network(network, config)
            if plan is None:
                raise CompileError(f"TensorRT failed to build an engine from {path.name} (see its log above)")
            data = bytes(plan)
            engine = runtime.deserialize_cuda_engine(data)
            inspector = engine.create_engine_inspector()
            info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            atomic_write_text(out.trt / f"{config_tag(k)}.layers.json", str(info))
            expected = count_qlinear_nodes(path)
            found = count_plugin_layers(info)
            if found < expected:
                raise CompileError(
                    f"{path.stem}.plan has {found} QLinear plugin layers for {expected} QLinear nodes: TensorRT "
                    f"built the function body instead of the plugin (plugin not registered or not preferred)"
                )
            atomic_write_bytes(out.plan(k), data)
            record["engines"].append(
                {
                    "config_id": k,
                    "plan": out.plan(k).relative_to(out.root).as_posix(),
                    "plugin_layers": found,
                    "qlinear_nodes": expected,
                }
            )
            advance(1)
    atomic_write_bytes(cache_path, bytes(cache.serialize()))
    return record


# --- no TensorRT ------------------------------------------------------------------------------------------------
def write_skip_record(out: OutputLayout, schedule: Schedule, compile_command: str, reason: str) -> Path:
    """``trt/BUILD_SKIPPED.txt``: why no engine was built and how to build each on a TensorRT machine."""
    graphs = engine_graphs(out)
    io = load_io(out.onnx)
    ids = [k for k, _ in graphs] or list(range(len(schedule.configs)))
    lines = [
        "No TensorRT engines were built.",
        f"Reason: {reason}.",
        "",
        "To build them on a machine with TensorRT >= 10.0 and a GPU, from this output directory:",
        "",
        "1. Build the plugin library (sources in plugins/src, see plugins/BUILD.json):",
        "     cmake -S plugins/src -B plugins/build -DTRT_ROOT=/path/to/TensorRT -DCUDA_ARCH=90a \\",
        "           -DADATSQ_KERNELS_DIR=$PWD/plugins/src/csrc && cmake --build plugins/build -j",
        f"     cp plugins/build/{PLUGIN_LIBRARY} plugins/build/{PLUGIN_LIBRARY_DYNAMIC} plugins/",
        "",
        "2. Either re-run the build stage (TensorRT Python API, checks the plugin layers):",
        f"     ADATSQ_TRT_PLUGIN=plugins/{PLUGIN_LIBRARY_DYNAMIC} {compile_command} -o . --until build",
        "   or run trtexec per configuration (same as trtexec/build_config_NN.sh):",
        "",
    ]
    for k in ids:
        lines.append("     " + " ".join(config_build_command(k, io, f"plugins/{PLUGIN_LIBRARY}")))
    lines += [
        "",
        "   TensorRT 10.x: add --stronglyTyped (TensorRT 11 removed --fp16/--bf16 and always builds strongly",
        "   typed). 10.15+: add --enablePluginOverride so the plugin wins over the ONNX function body.",
        "   The graphs are the TensorRT twins onnx/config_NN.trt.onnx: weights are static network inputs (no",
        "   shape flags needed; trtexec binds random data to them, so its timings are valid, its outputs not).",
        "   Then check every trt/config_NN.layers.json holds one plugin layer (LayerType PluginV3) per QLinear",
        "   node (else the engine runs the fake-quant function body); build_config_NN.sh does.",
    ]
    if not graphs:
        lines += ["", "onnx/ holds no config_NN.onnx yet: run the export stage first (--until export)."]
    if io is None:
        lines += ["", "onnx/io.json is absent: add --minShapes/--optShapes/--maxShapes for dynamic inputs."]
    path = out.trt / SKIP_RECORD
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
