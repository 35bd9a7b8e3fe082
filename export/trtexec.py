"""``onnx/io.json`` shapes → TensorRT optimization profiles, and the trtexec command lines / scripts.

Nothing here imports TensorRT. The build stage (export/trt_build.py) uses :func:`profile_shapes` for its
``IOptimizationProfile``; the package stage writes ``trtexec/build_config_NN.sh``,
``trtexec/profile_config_NN.sh`` and ``trtexec/profile_schedule.sh`` (every step's engine in schedule order)
with the same shapes, so a TensorRT machine can rebuild and profile every engine from the output directory
alone. The engines are built from the TensorRT twins ``onnx/config_NN.trt.onnx`` (io.json ``trt_graphs``,
export/trt_graph.py), whose weights are static-shape network inputs: they need no shape flags, and trtexec
binds random data to them, so the scripts' timings are valid (no kernel's time depends on weight values) but
their outputs are not. **Not run** here (no TensorRT): the flags were checked against trtexec's source
(NVIDIA/TensorRT main, 11.1: samples/common/sampleOptions.cpp) and the 10.x flags the reference lists.

``onnx/io.json`` (written by export/onnx_export.py) is read tolerantly. Accepted forms, per input::

    {"name": "hidden_states", "dtype": "float32", "shape": ["batch", "seq", 64],
     "min_shape": [1, 256, 64], "opt_shape": [...], "max_shape": [...]}        # explicit profile, or
    {"name": ..., "shape": ["batch", 256, 64]}  + top level "dims": {"batch": {"min": 1, "opt": 1, "max": 4}}

Top-level keys: ``inputs`` and ``outputs`` (lists as above), optional ``dims`` (also read from ``symbols``,
``dynamic_axes`` or ``profile``): a symbol maps to ``{"min", "opt", "max"}`` or to one int (static). A symbolic
dimension with no range uses its ``example_shape`` value, else 1 (min = opt = max).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adatsq.core.layout import OutputLayout, config_tag
from adatsq.plugins.onnx_op import OP_TYPE

__all__ = [
    "PLUGIN_LIBRARY",
    "PLUGIN_LIBRARY_DYNAMIC",
    "build_command",
    "config_build_command",
    "count_qlinear_nodes",
    "engine_graph",
    "load_io",
    "profile_command",
    "profile_shapes",
    "shape_arg",
    "write_schedule_profile_script",
    "write_trtexec_scripts",
]

#: The plugin library with static registration (REGISTER_TENSORRT_PLUGIN): for ``--staticPlugins``,
#: ``ctypes.CDLL``, Triton ``--backend-config=tensorrt,plugins=`` and ``LD_PRELOAD``.
PLUGIN_LIBRARY = "libadatsq_trt_plugins.so"
#: The same plugins with only the ``getCreators`` entry point: for ``--dynamicPlugins`` /
#: ``IPluginRegistry::loadLibrary`` (which fails if the plugins are already registered statically).
PLUGIN_LIBRARY_DYNAMIC = "libadatsq_trt_plugins_dynamic.so"

Shape = tuple[int, ...]


def load_io(onnx_dir: Path) -> dict[str, Any] | None:
    """``onnx_dir/io.json`` as a dict, or ``None`` when absent."""
    path = Path(onnx_dir) / "io.json"
    return json.loads(path.read_text()) if path.exists() else None


def _dims_table(io: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for key in ("symbols", "dynamic_axes", "profile", "dims"):  # later keys win
        raw = io.get(key)
        if not isinstance(raw, Mapping):
            continue
        for sym, spec in raw.items():
            if isinstance(spec, Mapping) and {"min", "opt", "max"} <= set(spec):
                table[str(sym)] = {k: int(spec[k]) for k in ("min", "opt", "max")}
            elif isinstance(spec, int):
                table[str(sym)] = {"min": spec, "opt": spec, "max": spec}
    return table


def profile_shapes(io: Mapping[str, Any]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Per network input: (min, opt, max) shapes for one optimization profile."""
    table = _dims_table(io)
    out: dict[str, tuple[Shape, Shape, Shape]] = {}
    for inp in io.get("inputs", []):
        name = str(inp["name"])
        if all(k in inp for k in ("min_shape", "opt_shape", "max_shape")):
            out[name] = tuple(tuple(int(d) for d in inp[k]) for k in ("min_shape", "opt_shape", "max_shape"))  # type: ignore[assignment]
            continue
        shape = inp.get("shape", [])
        example = inp.get("example_shape") or [None] * len(shape)
        lo: list[int] = []
        mid: list[int] = []
        hi: list[int] = []
        for d, ex in zip(shape, example):
            if isinstance(d, int) and d >= 0:
                lo.append(d)
                mid.append(d)
                hi.append(d)
            elif str(d) in table:
                r = table[str(d)]
                lo.append(r["min"])
                mid.append(r["opt"])
                hi.append(r["max"])
            else:
                v = int(ex) if isinstance(ex, int) else 1
                lo.append(v)
                mid.append(v)
                hi.append(v)
        out[name] = (tuple(lo), tuple(mid), tuple(hi))
    return out


def shape_arg(shapes: Mapping[str, Sequence[int]]) -> str:
    """trtexec shape syntax: ``name:1x256x64,other:1``. Names with ':' or ',' are quoted as trtexec expects."""
    parts = []
    for name, shape in shapes.items():
        n = f"'{name}'" if any(c in name for c in ":,") else name
        parts.append(f"{n}:{'x'.join(str(int(d)) for d in shape) if len(shape) else ''}")
    return ",".join(parts)


def build_command(
    onnx: str, plan: str, io: Mapping[str, Any] | None, plugin: str, *, timing_cache: str, layer_info: str
) -> list[str]:
    """``trtexec`` argv building one engine (paths as given, typically relative to the output directory).

    No precision flags: the network is strongly typed from the ONNX dtypes (TensorRT 11 removed
    ``--fp16/--bf16/--int8/--fp8`` and makes ``--stronglyTyped`` a no-op; the scripts add
    ``--stronglyTyped`` only when the installed trtexec lists it without calling it a no-op, i.e. 10.x).
    ``--enablePluginOverride`` makes the parser prefer the plugin over the model-local function body even
    without the ``plugin_namespace`` attribute (10.15+; the scripts drop it on older trtexec). Shape flags
    cover the data inputs only (io.json ``inputs``): the weight inputs are static.
    """
    argv = [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        f"--staticPlugins={plugin}",
        f"--timingCacheFile={timing_cache}",
        "--profilingVerbosity=detailed",
        f"--exportLayerInfo={layer_info}",
        "--skipInference",
    ]
    if io is not None:
        prof = profile_shapes(io)
        if prof:
            argv += [
                f"--minShapes={shape_arg({k: v[0] for k, v in prof.items()})}",
                f"--optShapes={shape_arg({k: v[1] for k, v in prof.items()})}",
                f"--maxShapes={shape_arg({k: v[2] for k, v in prof.items()})}",
            ]
    return argv


_REL = OutputLayout(".")  # output-directory paths relative to its root, as scripts and records spell them


def _layer_info(k: int) -> str:
    return (_REL.trt / f"{config_tag(k)}.layers.json").as_posix()


def engine_graph(k: int, io: Mapping[str, Any] | None) -> str:
    """The graph engine ``k`` is built from, relative to the output directory: the TensorRT twin io.json's
    ``trt_graphs`` names, else (an export that wrote no twins) ``onnx/config_NN.onnx``."""
    twins = (io or {}).get("trt_graphs") or {}
    name = twins.get(str(k))
    return (_REL.onnx / name).as_posix() if name else _REL.onnx_graph(k).as_posix()


def count_qlinear_nodes(path: Path) -> int:
    """QLinear nodes in a graph's main graph (what the engine must hold as plugin layers)."""
    import onnx

    from adatsq.plugins.onnx_op import DOMAIN

    model = onnx.load(str(path), load_external_data=False)
    return sum(1 for n in model.graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN)


def config_build_command(k: int, io: Mapping[str, Any] | None, plugin: str) -> list[str]:
    """:func:`build_command` of configuration ``k`` with the output directory's own paths (relative to it):
    ``onnx/config_NN.trt.onnx`` (:func:`engine_graph`) → ``trt/config_NN.plan``, the shared timing cache,
    ``trt/config_NN.layers.json``."""
    return build_command(
        engine_graph(k, io),
        _REL.plan(k).as_posix(),
        io,
        plugin,
        timing_cache=(_REL.trt / "timing.cache").as_posix(),
        layer_info=_layer_info(k),
    )


def profile_command(
    plan: str, io: Mapping[str, Any] | None, plugin: str, *, layer_info: str, profile_json: str
) -> list[str]:
    """``trtexec`` argv timing one engine with per-layer profile at the opt shapes. CUDA graphs and a
    separate profile run are the 11.x defaults; the scripts add ``--useCudaGraph --separateProfileRun`` only
    where trtexec does not call them no-ops (10.x)."""
    argv = [
        "trtexec",
        f"--loadEngine={plan}",
        f"--staticPlugins={plugin}",
        "--profilingVerbosity=detailed",
        "--dumpProfile",
        f"--exportProfile={profile_json}",
        f"--exportLayerInfo={layer_info}",
        "--warmUp=500",
        "--iterations=50",
    ]
    if io is not None:
        prof = profile_shapes(io)
        if prof:
            argv.append(f"--shapes={shape_arg({k: v[1] for k, v in prof.items()})}")
    return argv


_SCRIPT_HEAD = """#!/usr/bin/env bash
# Generated by adatsq (export/trtexec.py). {what}
# Run from anywhere: paths are relative to the output directory (this script's parent's parent).
# NOT run where this was generated: no TensorRT there. Needs trtexec (TensorRT >= 10.0) on PATH and the
# plugin library built from plugins/src (see plugins/BUILD.json).
# Weights are network inputs ({weights} static-shape inputs of onnx/{graph}, shared across engines by the
# runners): trtexec needs no shape flags for them and binds RANDOM data to them, so timings are valid (no
# kernel's time depends on weight values) but outputs are not. For real outputs bind the weights from
# onnx/weights.safetensors (a runner does; trtexec --loadInputs=name:file.bin per weight would too).
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGIN="${{ADATSQ_TRT_PLUGIN:-plugins/{plugin}}}"
if [ ! -f "$PLUGIN" ]; then
  echo "plugin library $PLUGIN not found: build plugins/src (cmake -DTRT_ROOT=...) or set ADATSQ_TRT_PLUGIN" >&2
  exit 2
fi
EXTRA=()
HELP="$(trtexec --help 2>&1 || true)"
# a flag this trtexec lists and does not call a no-op (11.x lists --stronglyTyped etc. as deprecated no-ops)
active() {{ grep -- "$1" <<<"$HELP" | grep -qv -e 'no-op' -e 'Deprecated'; }}
"""

_BUILD_FLAGS = """# TensorRT 10.x needs --stronglyTyped; 11.x always builds strongly typed and removed the precision flags.
if active '--stronglyTyped'; then EXTRA+=(--stronglyTyped); fi
# Prefer the QLinear plugin over the model-local ONNX function body (10.15+).
if active '--enablePluginOverride'; then EXTRA+=(--enablePluginOverride); fi
mkdir -p trt
"""

_PROFILE_FLAGS = """# 10.x: CUDA graphs and a separate profile run are opt-in; 11.x: defaults (the flags are no-ops there).
if active '--useCudaGraph'; then EXTRA+=(--useCudaGraph); fi
if active '--separateProfileRun'; then EXTRA+=(--separateProfileRun); fi
"""

#: Counts the engine's plugin layers by layer TYPE in trtexec's --exportLayerInfo JSON (detailed verbosity:
#: {"Layers": [{"Name", "LayerType": "PluginV3", ...}]}); layer names are not used (fusion renames layers and
#: no name need contain "QLinear").
_PLUGIN_CHECK = """# Fail if TensorRT silently built the function body instead of the plugin (reference §7): the engine
# must hold one plugin layer (LayerType PluginV3) per QLinear node ({expected} in the graph).
found="$(python3 - "{layers}" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
layers = info.get("Layers", []) if isinstance(info, dict) else []
print(sum(1 for l in layers if isinstance(l, dict) and str(l.get("LayerType", "")).startswith("Plugin")))
PY
)"
if [ "$found" -lt {expected} ]; then
  echo "{plan}: $found plugin layers for {expected} QLinear nodes: TensorRT built the function body (plugin not used)" >&2
  exit 3
fi
"""


def _render(argv: list[str]) -> str:
    args = []
    for a in argv[1:]:
        if a.startswith("--staticPlugins="):
            args.append('--staticPlugins="$PLUGIN"')
        else:
            args.append(shlex.quote(a))
    return "trtexec \\\n  " + " \\\n  ".join(args) + ' \\\n  "${EXTRA[@]}" "$@"\n'


def _weight_count(io: Mapping[str, Any] | None, k: int) -> int:
    per = (io or {}).get("weight_inputs_per_config") or {}
    return len(per.get(str(k), []))


def write_trtexec_scripts(
    root: Path,
    config_ids: Sequence[int],
    io: Mapping[str, Any] | None,
    step_configs: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``trtexec/build_config_NN.sh`` and ``trtexec/profile_config_NN.sh`` (executable), with
    ``step_configs`` also ``trtexec/profile_schedule.sh``, and a README; returns the scripts. Paths inside
    are relative to ``root``."""
    from adatsq.core.atomic import atomic_write_text, make_executable

    d = OutputLayout(root).trtexec
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k in config_ids:
        tag = config_tag(k)
        graph, plan, layers = engine_graph(k, io), _REL.plan(k).as_posix(), _layer_info(k)
        graph_file = Path(root) / graph
        expected = count_qlinear_nodes(graph_file) if _is_onnx(graph_file) else 1
        build = config_build_command(k, io, PLUGIN_LIBRARY)
        prof = profile_command(
            plan,
            io,
            PLUGIN_LIBRARY,
            layer_info=(_REL.trtexec / f"{tag}.layers.json").as_posix(),
            profile_json=(_REL.trtexec / f"{tag}.profile.json").as_posix(),
        )
        fmt = {"plugin": PLUGIN_LIBRARY, "weights": _weight_count(io, k), "graph": Path(graph).name}
        head_b = _SCRIPT_HEAD.format(what=f"Builds {plan} from {graph}.", **fmt)
        head_p = _SCRIPT_HEAD.format(what=f"Profiles {plan} per layer (--dumpProfile).", **fmt)
        if not (io or {}).get("trt_graphs"):
            head_b += (
                "# onnx/io.json names no TensorRT twin (an export before config_NN.trt.onnx existed): this builds\n"
                "# the ONNX Runtime graph, which the parser rejects; re-run the export stage.\n"
            )
        check = _PLUGIN_CHECK.format(layers=layers, expected=expected, plan=plan)
        for name, text in (
            (f"build_{tag}.sh", head_b + _BUILD_FLAGS + _render(build) + check),
            (f"profile_{tag}.sh", head_p + _PROFILE_FLAGS + _render(prof)),
        ):
            path = d / name
            atomic_write_text(path, text)
            make_executable(path)
            written.append(path)
    if step_configs is not None:
        written.append(write_schedule_profile_script(root, step_configs, io))
    readme = [
        "# trtexec scripts",
        "",
        "Generated by adatsq; **not run** where they were generated (no TensorRT there).",
        "",
        "* `build_config_NN.sh`: `onnx/config_NN.trt.onnx` (the TensorRT twin: weights as inputs) → "
        "`trt/config_NN.plan`, one shared `trt/timing.cache` across configs, layer info to "
        "`trt/config_NN.layers.json`; fails unless the engine holds one plugin layer (LayerType PluginV3) per "
        "QLinear node.",
        "* `profile_config_NN.sh`: per-layer timing of one engine (`--dumpProfile --exportProfile`).",
        "* `profile_schedule.sh`: every denoising step's engine in schedule order, one timing each, and the sum.",
        "",
        "Shapes: `--minShapes/--optShapes/--maxShapes` are onnx/io.json's `min_shape/opt_shape/max_shape` of "
        "the data inputs; the weight inputs are static. trtexec binds random data to the weight inputs: the "
        "timings are valid, the outputs are not.",
        "",
        f"The plugin library is `plugins/{PLUGIN_LIBRARY}` (override with `ADATSQ_TRT_PLUGIN=/path/lib.so`).",
        "TensorRT 11 trtexec has no `--fp16/--bf16/--fp8` flags (strongly typed only); the scripts add "
        "`--stronglyTyped` (and, when profiling, `--useCudaGraph --separateProfileRun`) only when the installed "
        "trtexec does not call them no-ops.",
    ]
    if io is None:
        readme += [
            "",
            "onnx/io.json was absent: the scripts carry no shape flags; add --minShapes/--optShapes/"
            "--maxShapes (build) and --shapes (profile) for dynamic inputs.",
        ]
    atomic_write_text(d / "README.md", "\n".join(readme) + "\n")
    return written


def _is_onnx(path: Path) -> bool:
    """A real ONNX file (package tests write placeholders)."""
    if not path.is_file():
        return False
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a placeholder or damaged file: the check falls back to >= 1 layer
        return False
    return True


def write_schedule_profile_script(
    root: Path, step_configs: Sequence[int], io: Mapping[str, Any] | None
) -> Path:
    """``trtexec/profile_schedule.sh``: step i runs ``trt/config_<step_configs[i]>.plan`` at the opt shapes
    (each engine is loaded once per step, as in the loop), its GPU compute time (trtexec ``--exportTimes``)
    is printed per step and summed: the transformer time of one generation, without the switch costs of a
    runner (which launches one CUDA graph per step on one stream)."""
    from adatsq.core.atomic import atomic_write_text, make_executable

    d = OutputLayout(root).trtexec
    d.mkdir(parents=True, exist_ok=True)
    steps = " ".join(str(int(c)) for c in step_configs)
    shapes = ""
    if io is not None and (prof := profile_shapes(io)):
        shapes = shlex.quote(f"--shapes={shape_arg({k: v[1] for k, v in prof.items()})}")
    ks = sorted(set(int(c) for c in step_configs))
    head = _SCRIPT_HEAD.format(
        what="Times every denoising step's engine in schedule order.",
        plugin=PLUGIN_LIBRARY,
        weights=max((_weight_count(io, k) for k in ks), default=0),
        graph="config_NN.trt.onnx",
    )
    body = (
        head
        + _PROFILE_FLAGS
        + f"""STEP_CONFIGS=({steps})  # schedule.json step_configs
mkdir -p trtexec/schedule
for i in "${{!STEP_CONFIGS[@]}}"; do
  k="$(printf '%02d' "${{STEP_CONFIGS[$i]}}")"
  trtexec --loadEngine="trt/config_$k.plan" --staticPlugins="$PLUGIN" {shapes} \\
    --warmUp=200 --iterations=20 --exportTimes="trtexec/schedule/step_$(printf '%02d' "$i").times.json" \\
    "${{EXTRA[@]}}" "$@" >"trtexec/schedule/step_$(printf '%02d' "$i").log" 2>&1
done
python3 - "${{STEP_CONFIGS[@]}}" <<'PY'
import json, sys
total = 0.0
for i, k in enumerate(sys.argv[1:]):
    times = json.load(open(f"trtexec/schedule/step_{{i:02d}}.times.json"))
    ms = sum(t["computeMs"] for t in times) / len(times)
    total += ms
    print(f"step {{i:2d}}  config_{{int(k):02d}}  {{ms:.3f}} ms (mean GPU compute)")
print(f"total {{total:.3f}} ms over {{len(sys.argv) - 1}} steps")
PY
"""
    )
    path = d / "profile_schedule.sh"
    atomic_write_text(path, body)
    make_executable(path)
    return path
