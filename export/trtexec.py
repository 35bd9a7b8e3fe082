"""``onnx/io.json`` shapes → TensorRT optimization profiles, and the trtexec command lines / scripts.

Nothing here imports TensorRT. The build stage (export/trt_build.py) uses :func:`profile_shapes` for its
``IOptimizationProfile``; the package stage writes ``trtexec/build_config_NN.sh`` and
``trtexec/profile_config_NN.sh`` with the same shapes, so a TensorRT machine can rebuild and profile every
engine from the output directory alone.

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
    "load_io",
    "profile_command",
    "profile_shapes",
    "shape_arg",
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
    ``--stronglyTyped`` only when the installed trtexec still lists it, i.e. TensorRT 10.x).
    ``--enablePluginOverride`` makes the parser prefer the plugin over the model-local function body even
    without the ``plugin_namespace`` attribute (10.15+; the scripts drop it on older trtexec).
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


def config_build_command(k: int, io: Mapping[str, Any] | None, plugin: str) -> list[str]:
    """:func:`build_command` of configuration ``k`` with the output directory's own paths (relative to it):
    ``onnx/config_NN.onnx`` → ``trt/config_NN.plan``, the shared timing cache, ``trt/config_NN.layers.json``."""
    return build_command(
        _REL.onnx_graph(k).as_posix(),
        _REL.plan(k).as_posix(),
        io,
        plugin,
        timing_cache=(_REL.trt / "timing.cache").as_posix(),
        layer_info=_layer_info(k),
    )


def profile_command(
    plan: str, io: Mapping[str, Any] | None, plugin: str, *, layer_info: str, profile_json: str
) -> list[str]:
    """``trtexec`` argv timing one engine with per-layer profile (CUDA graphs are the 11.x default)."""
    argv = [
        "trtexec",
        f"--loadEngine={plan}",
        f"--staticPlugins={plugin}",
        "--profilingVerbosity=detailed",
        "--dumpProfile",
        "--separateProfileRun",
        f"--exportProfile={profile_json}",
        f"--exportLayerInfo={layer_info}",
        "--useCudaGraph",
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
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGIN="${{ADATSQ_TRT_PLUGIN:-plugins/{plugin}}}"
if [ ! -f "$PLUGIN" ]; then
  echo "plugin library $PLUGIN not found: build plugins/src (cmake -DTRT_ROOT=...) or set ADATSQ_TRT_PLUGIN" >&2
  exit 2
fi
EXTRA=()
HELP="$(trtexec --help 2>&1 || true)"
"""

_BUILD_FLAGS = """# TensorRT 10.x needs --stronglyTyped; 11.x makes it a no-op and removed the precision flags.
if grep -q -- '--stronglyTyped' <<<"$HELP"; then EXTRA+=(--stronglyTyped); fi
# Prefer the QLinear plugin over the model-local ONNX function body (10.15+).
if grep -q -- '--enablePluginOverride' <<<"$HELP"; then EXTRA+=(--enablePluginOverride); fi
mkdir -p trt
"""


def _render(argv: list[str]) -> str:
    args = []
    for a in argv[1:]:
        if a.startswith("--staticPlugins="):
            args.append('--staticPlugins="$PLUGIN"')
        else:
            args.append(shlex.quote(a))
    return "trtexec \\\n  " + " \\\n  ".join(args) + ' \\\n  "${EXTRA[@]}" "$@"\n'


def write_trtexec_scripts(root: Path, config_ids: Sequence[int], io: Mapping[str, Any] | None) -> list[Path]:
    """Write ``trtexec/build_config_NN.sh`` and ``trtexec/profile_config_NN.sh`` (executable) and a README;
    returns the scripts. Paths inside are relative to ``root``."""
    from adatsq.core.atomic import atomic_write_text, make_executable

    d = OutputLayout(root).trtexec
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k in config_ids:
        tag = config_tag(k)
        onnx_path, plan, layers = _REL.onnx_graph(k).as_posix(), _REL.plan(k).as_posix(), _layer_info(k)
        build = config_build_command(k, io, PLUGIN_LIBRARY)
        prof = profile_command(
            plan,
            io,
            PLUGIN_LIBRARY,
            layer_info=(_REL.trtexec / f"{tag}.layers.json").as_posix(),
            profile_json=(_REL.trtexec / f"{tag}.profile.json").as_posix(),
        )
        head_b = _SCRIPT_HEAD.format(what=f"Builds {plan} from {onnx_path}.", plugin=PLUGIN_LIBRARY)
        head_p = _SCRIPT_HEAD.format(
            what=f"Profiles {plan} per layer (--dumpProfile).", plugin=PLUGIN_LIBRARY
        )
        check = (
            f"# Fail if TensorRT silently built the function body instead of the plugin (reference §7).\n"
            f"grep -q '{OP_TYPE}' {layers} || "
            f"{{ echo 'no {OP_TYPE} plugin layer in {plan}: plugin not used' >&2; exit 3; }}\n"
        )
        for name, text in (
            (f"build_{tag}.sh", head_b + _BUILD_FLAGS + _render(build) + check),
            (f"profile_{tag}.sh", head_p + _render(prof)),
        ):
            path = d / name
            atomic_write_text(path, text)
            make_executable(path)
            written.append(path)
    readme = [
        "# trtexec scripts",
        "",
        "Generated by adatsq; **not run** where they were generated (no TensorRT there).",
        "",
        "* `build_config_NN.sh`: ONNX → `trt/config_NN.plan`, one shared `trt/timing.cache` across configs, "
        "layer info to `trt/config_NN.layers.json`, fails if no QLinear plugin layer is in the engine.",
        "* `profile_config_NN.sh`: per-layer timing of one engine (`--dumpProfile --exportProfile`).",
        "",
        f"The plugin library is `plugins/{PLUGIN_LIBRARY}` (override with `ADATSQ_TRT_PLUGIN=/path/lib.so`).",
        "TensorRT 11 trtexec has no `--fp16/--bf16/--fp8` flags (strongly typed only); the scripts add "
        "`--stronglyTyped` only when the installed trtexec still lists it.",
    ]
    if io is None:
        readme += [
            "",
            "onnx/io.json was absent: the scripts carry no shape flags; add --minShapes/--optShapes/"
            "--maxShapes (build) and --shapes (profile) for dynamic inputs.",
        ]
    atomic_write_text(d / "README.md", "\n".join(readme) + "\n")
    return written
