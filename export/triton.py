"""The Triton Inference Server model repositories (``<out>/triton/`` and ``<out>/triton_cpu/``), reference/tensorrt.md
§6 and §9c ("stock path").

Layout::

    triton/                              GPU: TensorRT engines (tensorrt backend)
      adatsq_config_NN/config.pbtxt      platform "tensorrt_plan", one per distinct configuration; inputs are
                                         the graph inputs of io.json plus the configuration's weight inputs
      adatsq_config_NN/1/model.plan      symlink to ../../../trt/config_NN.plan when the engine exists,
                                         else README.md saying where the plan goes (no fake plans)
      adatsq_denoiser/config.pbtxt       python backend, BLS: the whole denoising loop
      adatsq_denoiser/1/model.py         triton_models/denoiser.py
      adatsq_denoiser/1/denoiser.json    step models, sigmas, timesteps, tensor names, weight inputs
      launch.sh                          tritonserver with the QLinear plugin library loaded
      README.md
    triton_cpu/                          CPU: the same loop, each configuration an ONNX Runtime graph
      adatsq_config_NN/config.pbtxt      python backend, parameters onnx_graph (../../onnx/config_NN.onnx),
                                         config_id, output
      adatsq_config_NN/1/model.py        triton_models/ort_config.py
      adatsq_denoiser/...                as above, step_config_ids from the models' adatsq_config_id output
      launch.sh, README.md

Ensembles cannot express the loop (reference §6), hence the python BLS denoiser. It runs every step of a
request in one ``execute`` and returns, besides the final latent, the per-step latents, timesteps, velocities
and answering configurations, so a client can check each step (tests/e2e/test_triton_server.py does).

Weight sharing under Triton's stock tensorrt backend (decision). The engines are built from the TensorRT twins
``onnx/config_NN.trt.onnx``, whose packed weights are graph INPUTS (issue 16's shared decision), and only the
twins pass the parser (the plain graphs hold sequence ops and UINT8 initializers). So each
``adatsq_config_NN`` takes its weight inputs per request, and the denoiser holds ``weights.safetensors``
once, as device tensors (safetensors.torch on the GPU), and passes them with every step's request as DLPack
views. The alternative, plans with the weights embedded, would need a third graph per configuration and still
holds N copies. What this buys under the stock backend is bounded: the tensorrt backend copies request inputs
into its own per-instance buffers (``BackendInputCollector``; zero-copy only on integrated GPUs, reference §3),
so it is expected to hold one weight copy per model instance and to copy the weights device-to-device every
step; the one-copy, one-scratch deployment is the C++ runner or the runner's trt backend (runtime/), which a
python-backend model could host (not written). UNVERIFIED: no tensorrt backend, GPU or TensorRT here; the
``triton/`` repository and the denoiser's GPU weight loading (safetensors.torch, CUDA DLPack) have not run.
What has run here (tests): every config.pbtxt of the repositories parses as tritonclient's ``ModelConfig``
protobuf; ``triton_cpu/`` on a real tritonserver 2.51 (python backend, CPU) gives the runner's result step by
step; and the same denoiser passing the weights per request (held once, on the CPU) to per-config models that
run the twins (:func:`write_cpu_repository` with ``twin=True``, written by the test only) reproduces the
twins run in-process, step by step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from adatsq.core.atomic import atomic_write_text, copy_file, make_executable
from adatsq.core.layout import OutputLayout, config_tag
from adatsq.core.schedule import Schedule
from adatsq.export.trtexec import PLUGIN_LIBRARY

__all__ = [
    "CPU_REPOSITORY",
    "DENOISER_MODEL",
    "IDENTITY_OUTPUT",
    "STEP_OUTPUTS",
    "SUPPORTED_SCHEDULERS",
    "config_model_name",
    "cpu_config_pbtxt",
    "denoiser_config_pbtxt",
    "launch_script",
    "plan_config_pbtxt",
    "sampler_tables",
    "triton_dtype",
    "weight_inputs",
    "write_cpu_repository",
    "write_triton_repository",
]

DENOISER_MODEL = "adatsq_denoiser"
CPU_REPOSITORY = "triton_cpu"
IDENTITY_OUTPUT = "adatsq_config_id"  # INT32 [1]: the configuration a CPU per-config model runs
#: the denoiser's outputs besides ``latent_out``, one entry per step
STEP_OUTPUTS = ("step_latents", "step_timesteps", "step_velocities", "step_config_ids")
SUPPORTED_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
MODEL_SOURCES = Path(__file__).resolve().parent / "triton_models"

_TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "half": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


def _outputs(io: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """io.json outputs: a list under ``outputs`` or one dict under ``output`` (export/graph_io.py form)."""
    if not io:
        return []
    if "outputs" in io:
        return list(io["outputs"])
    return [io["output"]] if isinstance(io.get("output"), Mapping) else []


def config_model_name(k: int) -> str:
    """The Triton model of configuration ``k``, ``adatsq_config_NN``: the one place the name is made
    (repository folders, the denoiser's step models, the manifest's engine records)."""
    return f"adatsq_{config_tag(k)}"


def triton_dtype(dtype: str) -> str:
    """ONNX/torch/numpy dtype name (``float32``, ``torch.float16``, ``FLOAT``, ``tensor(float)``) → Triton."""
    d = str(dtype).lower().removeprefix("torch.").removeprefix("tensor(").removesuffix(")")
    if d not in _TRITON_DTYPES:
        raise ValueError(f"no Triton data type for {dtype!r}")
    return _TRITON_DTYPES[d]


def weight_inputs(io: Mapping[str, Any] | None, k: int) -> list[Mapping[str, Any]]:
    """io.json ``weight_inputs`` records of configuration ``k``'s TensorRT twin (``weight_inputs_per_config``;
    every record when that key is absent); empty for an io.json without weight inputs."""
    if not io or not io.get("weight_inputs"):
        return []
    by_name = {w["name"]: w for w in io["weight_inputs"]}
    names = (io.get("weight_inputs_per_config") or {}).get(str(k))
    return [by_name[n] for n in (list(by_name) if names is None else names)]


def _dims(shape: Sequence[Any]) -> str:
    return "[ " + ", ".join(str(d) if isinstance(d, int) and d >= 0 else "-1" for d in shape) + " ]"


def _tensor_block(kind: str, tensors: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        lines += [
            "  {",
            f'    name: "{t["name"]}"',
            f"    data_type: {triton_dtype(t['dtype'])}",
            f"    dims: {_dims(t.get('shape', []))}",
            "  }" + ("," if i < len(tensors) - 1 else ""),
        ]
    return [*lines, "]"]


def _parameters(values: Mapping[str, str]) -> list[str]:
    return [f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in values.items()]


def _cpu_instances() -> list[str]:
    return ["instance_group [", "  {", "    kind: KIND_CPU", "    count: 1", "  }", "]"]


def plan_config_pbtxt(k: int, io: Mapping[str, Any] | None) -> str:
    """``config.pbtxt`` of one engine. ``max_batch_size: 0``: the graphs carry their own batch dimension
    (dynamic dims as -1); the weight inputs of the configuration have their static shapes. Without io.json,
    inputs/outputs are left to Triton's auto-complete for plans."""
    lines = [
        f"# adatsq engine for activation configuration {k} (generated; see triton/README.md)",
        f'name: "{config_model_name(k)}"',
        'platform: "tensorrt_plan"',
        "max_batch_size: 0",
        'default_model_filename: "model.plan"',
    ]
    if io is not None:
        lines += _tensor_block("input", [*io.get("inputs", []), *weight_inputs(io, k)])
        lines += _tensor_block("output", _outputs(io))
    lines += [
        "instance_group [",
        "  {",
        "    kind: KIND_GPU",
        "    count: 1",
        '    profile: [ "0" ]',
        "  }",
        "]",
        "optimization {",
        "  cuda {",
        "    graphs: true",
        "  }",
        "}",
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    return "\n".join(lines) + "\n"


def cpu_config_pbtxt(k: int, io: Mapping[str, Any], twin: bool = False) -> str:
    """``config.pbtxt`` of configuration ``k`` in a CPU repository: a python-backend model running an ONNX
    graph in ONNX Runtime (triton_models/ort_config.py), ``onnx/config_NN.onnx`` (weights as external data) or,
    with ``twin``, its TensorRT twin (io.json ``trt_graphs``; the weights are inputs, which the denoiser
    passes). Inputs are the graph's, outputs the graph's plus ``adatsq_config_id``."""
    outs = _outputs(io)
    graph = io["trt_graphs"][str(k)] if twin else f"{config_tag(k)}.onnx"
    inputs = [*io.get("inputs", []), *(weight_inputs(io, k) if twin else [])]
    return (
        "\n".join(
            [
                f"# adatsq configuration {k} on the CPU: onnx/{graph} in ONNX Runtime (generated)",
                f'name: "{config_model_name(k)}"',
                'backend: "python"',
                "max_batch_size: 0",
                *_tensor_block("input", inputs),
                *_tensor_block("output", [*outs, {"name": IDENTITY_OUTPUT, "dtype": "int32", "shape": [1]}]),
                *_cpu_instances(),
                *_parameters(
                    {"onnx_graph": f"../../onnx/{graph}", "config_id": str(k), "output": str(outs[0]["name"])}
                ),
            ]
        )
        + "\n"
    )


def denoiser_config_pbtxt(
    io: Mapping[str, Any] | None,
    latent_input: str,
    output: str,
    passthrough: Sequence[str],
    steps: int | None = None,
) -> str:
    """``config.pbtxt`` of the python BLS denoiser: inputs are the initial noise (the engines' latent input)
    and the per-request conditioning the engines take (everything but the timestep and the weights); outputs
    the final latent in the same packed layout and the per-step records (:data:`STEP_OUTPUTS`, first dim
    ``steps``)."""
    by_name = {t["name"]: t for t in (io or {}).get("inputs", [])}
    outs = {t["name"]: t for t in _outputs(io)}
    latent = by_name.get(latent_input, {"name": latent_input, "dtype": "float32", "shape": [-1, -1, -1]})
    inputs = [latent, *(by_name[n] for n in passthrough if n in by_name)]
    out = dict(outs.get(output, {"name": output, "dtype": "float32", "shape": [-1, -1, -1]}))
    n = steps if steps is not None else -1
    batch = list(latent.get("shape", [-1]))[:1] or [-1]
    records = [
        {"name": "latent_out", "dtype": out["dtype"], "shape": list(out.get("shape", []))},
        {"name": "step_latents", "dtype": "float32", "shape": [n, *latent.get("shape", [])]},
        {"name": "step_timesteps", "dtype": "float32", "shape": [n, *batch]},
        {"name": "step_velocities", "dtype": "float32", "shape": [n, *out.get("shape", [])]},
        {"name": "step_config_ids", "dtype": "int32", "shape": [n]},
    ]
    lines = [
        "# adatsq BLS denoiser: runs the whole denoising loop, one adatsq_config_NN call per step (generated)",
        f'name: "{DENOISER_MODEL}"',
        'backend: "python"',
        "max_batch_size: 0",
        *_tensor_block("input", inputs),
        *_tensor_block("output", records),
        *_cpu_instances(),
    ]
    return "\n".join(lines) + "\n"


def launch_script(gpu: bool) -> str:
    """``launch.sh`` of a repository: ``exec tritonserver`` on the folder the script is in, on
    ``$HTTP_ADDRESS`` (default 127.0.0.1) and ports ``$HTTP_PORT``/``$GRPC_PORT``/``$METRICS_PORT``;
    ``$TRITONSERVER`` (default ``tritonserver`` on PATH) and ``$BACKEND_DIRECTORY`` (optional) pick the server;
    extra arguments are passed on. ``gpu``: the QLinear plugin library (``$ADATSQ_PLUGIN``, default
    ``<out>/plugins/<library>``) is loaded by the tensorrt backend's ``plugins=`` option (it only dlopens the
    library: static registration), or with ``ADATSQ_PLUGIN_LOAD=preload`` by ``LD_PRELOAD``; one mechanism
    only, a second registration of the same creators fails."""
    lines = [
        "#!/usr/bin/env bash",
        "# Start tritonserver on this model repository (generated by adatsq; see README.md beside it).",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'ROOT="$(dirname "$HERE")"',
        'ADDRESS="${HTTP_ADDRESS:-127.0.0.1}"',
        "ARGS=(",
        '  --model-repository="$HERE"',
        '  --http-address="$ADDRESS" --http-port="${HTTP_PORT:-8000}"',
        '  --grpc-address="$ADDRESS" --grpc-port="${GRPC_PORT:-8001}"',
        '  --metrics-address="$ADDRESS" --metrics-port="${METRICS_PORT:-8002}"',
        '  --exit-timeout-secs="${EXIT_TIMEOUT_SECS:-5}"',
        ")",
        'if [ -n "${BACKEND_DIRECTORY:-}" ]; then ARGS+=(--backend-directory="$BACKEND_DIRECTORY"); fi',
    ]
    if gpu:
        lines += [
            f'PLUGIN="${{ADATSQ_PLUGIN:-$ROOT/plugins/{PLUGIN_LIBRARY}}}"',
            'if [ ! -f "$PLUGIN" ]; then',
            '  echo "launch.sh: QLinear plugin library $PLUGIN not found (plugins/BUILD.json says how to '
            'build it)" >&2',
            "  exit 2",
            "fi",
            'case "${ADATSQ_PLUGIN_LOAD:-backend}" in',
            '  backend) ARGS+=(--backend-config=tensorrt,plugins="$PLUGIN") ;;',
            '  preload) export LD_PRELOAD="$PLUGIN${LD_PRELOAD:+:$LD_PRELOAD}" ;;',
            '  *) echo "launch.sh: ADATSQ_PLUGIN_LOAD must be backend or preload" >&2; exit 2 ;;',
            "esac",
        ]
    lines.append('exec "${TRITONSERVER:-tritonserver}" "${ARGS[@]}" "$@"')
    return "\n".join(lines) + "\n"


def sampler_tables(root: Path, s: Schedule) -> tuple[list[float], list[float]]:
    """(σ_0 … σ_steps, τ_0 … τ_{steps−1}): the real diffusers scheduler's float32 sigmas (the last 0) and the
    float32 timestep the runner feeds per step, τ_i = t_i / 1000 (FluxFamily.velocity), for the schedule's
    model at its resolution. The schedule records the timesteps rounded to 1e-6, which is not the float32 the
    sampler uses; the scheduler is rebuilt here and must agree with them within that rounding. A model the
    registry does not know falls back to σ_i = τ_i = t_i / num_train_timesteps from the schedule."""
    from types import SimpleNamespace

    from adatsq.core.models.base import timesteps_for
    from adatsq.core.models.registry import ModelLoadError, family_of, get_spec

    recorded = [float(t) for t in s.sampler.timesteps]
    n_train = float(s.sampler.scheduler_config.get("num_train_timesteps", 1000))
    try:
        spec = get_spec(s.model)
    except ModelLoadError:
        fallback = [t / n_train for t in recorded]
        return [*fallback, 0.0], fallback
    family = family_of(spec)
    cfg = json.loads((root / "transformer_config.json").read_text())
    model = SimpleNamespace(config=SimpleNamespace(**cfg))
    latent_shape = family.latent_shape(spec, model, tuple(s.resolution))  # type: ignore[arg-type]
    scheduler, ts = timesteps_for(family, spec, s.steps, tuple(latent_shape))
    if len(ts) != len(recorded) or any(
        abs(float(a) - b) > 1e-5 * max(1.0, abs(b)) for a, b in zip(ts, recorded)
    ):
        raise ValueError(
            f"the scheduler rebuilt for {s.model} gives timesteps {[float(t) for t in ts]}, "
            f"not the schedule's {recorded}"
        )
    sigmas = [float(x) for x in scheduler.sigmas.float()]
    taus = [float(x) for x in (ts.float() / 1000)]
    return sigmas, taus


def _np_dtype(dtype: str) -> str:
    d = str(dtype).lower().removeprefix("torch.").removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "half": "float16", "bfloat16": "float32"}.get(d, d)


def _denoiser_record(
    *,
    io: Mapping[str, Any] | None,
    config_ids: Sequence[int],
    step_configs: Sequence[int],
    sigmas: Sequence[float],
    timesteps: Sequence[float],
    scheduler: str,
    family: str,
    gpu: bool,
    weights_device: str | None,
) -> dict[str, Any]:
    inputs = [t["name"] for t in (io or {}).get("inputs", [])]
    outputs = [t["name"] for t in _outputs(io)]
    latent = "hidden_states" if "hidden_states" in inputs or not inputs else inputs[0]
    output = outputs[0] if outputs else "output"
    dtypes = {t["name"]: t.get("dtype", "float32") for t in (io or {}).get("inputs", [])}
    out_dtypes = {t["name"]: t.get("dtype", "float32") for t in _outputs(io)}
    record: dict[str, Any] = {
        "scheduler": scheduler,
        "supported_schedulers": list(SUPPORTED_SCHEDULERS),
        "family": family,
        "sigmas": [float(x) for x in sigmas],
        "timesteps": [float(x) for x in timesteps],
        "step_configs": [int(c) for c in step_configs],
        "step_models": [config_model_name(int(c)) for c in step_configs],
        "latent_input": latent,
        "latent_dtype": _np_dtype(dtypes.get(latent, "float32")),
        "timestep_input": "timestep",
        "timestep_dtype": _np_dtype(dtypes.get("timestep", "float32")),
        "output": output,
        "output_dtype": _np_dtype(out_dtypes.get(output, "float32")),
        "passthrough_inputs": [n for n in inputs if n not in (latent, "timestep")],
        "identity_output": None if gpu else IDENTITY_OUTPUT,
    }
    if weights_device is not None:
        record["weights"] = {
            "file": "../../onnx/weights.safetensors",
            "device": weights_device,
            "per_model": {
                config_model_name(k): [[w["name"], w.get("key", w["name"])] for w in weight_inputs(io, k)]
                for k in config_ids
            },
        }
    return record


def _readme(gpu: bool, n_configs: int, steps: int) -> str:
    common = [
        f"* `adatsq_config_NN` ({n_configs} here): one model per activation configuration.",
        f"* `{DENOISER_MODEL}`: python-backend BLS model running the whole denoising loop ({steps} steps), "
        "calling the schedule's `adatsq_config_NN` per step (FlowMatchEuler, Flux only). Outputs `latent_out` "
        f"and the per-step records {', '.join(f'`{o}`' for o in STEP_OUTPUTS)}.",
        "",
        "Start: `./launch.sh` (tritonserver from `$TRITONSERVER` or PATH, on 127.0.0.1 ports "
        "`$HTTP_PORT`/`$GRPC_PORT`/`$METRICS_PORT`, default 8000/8001/8002). Client: "
        "`python -m adatsq.runtime.triton_client <out> --url 127.0.0.1:8000`.",
        "The python backend needs numpy in the server's Python (first `python3` on PATH, and its "
        "libpython on LD_LIBRARY_PATH); tensors cross the stub as DLPack, which also works with numpy 2.",
    ]
    if not gpu:
        return (
            "\n".join(
                [
                    "# Triton model repository, CPU variant (generated by adatsq)",
                    "",
                    "Each `adatsq_config_NN` is a python-backend model running `onnx/config_NN.onnx` in ONNX "
                    "Runtime (needs onnxruntime in the server's Python). Ran here on a real tritonserver 2.51 "
                    "(nvidia-pytriton 0.7.0, python backend, CPU): tests/e2e/test_triton_server.py.",
                    "",
                    *common,
                ]
            )
            + "\n"
        )
    return (
        "\n".join(
            [
                "# Triton model repository, GPU (generated by adatsq; NOT run: no tensorrt backend here)",
                "",
                "Each `adatsq_config_NN` is a `tensorrt_plan` model of `trt/config_NN.plan`, built from the "
                "TensorRT twin `onnx/config_NN.trt.onnx` whose packed weights are inputs; the denoiser loads "
                "`onnx/weights.safetensors` once onto the GPU (safetensors.torch) and passes each step model its "
                "weight inputs per request. The stock tensorrt backend copies request inputs into its own buffers, "
                "so expect one weight copy per model instance and a device copy per step (export/triton.py).",
                "",
                *common,
                "",
                "The QLinear plugin must be registered in the server process. `launch.sh` passes",
                "",
                f"    --backend-config=tensorrt,plugins=$PWD/plugins/{PLUGIN_LIBRARY}",
                "",
                "(the backend only dlopens the library, so it must use static registration, which "
                f"`{PLUGIN_LIBRARY}` does); `ADATSQ_PLUGIN_LOAD=preload ./launch.sh` uses instead",
                "",
                f"    LD_PRELOAD=$PWD/plugins/{PLUGIN_LIBRARY} tritonserver --model-repository=$PWD/triton",
                "",
                "Load the library by one mechanism only (a second registration of the same creators fails).",
                "Every engine has its own activation memory in the stock TensorRT backend (no shared scratch);",
                "the C++ runner shares one scratch buffer and captures one CUDA graph per configuration.",
                "Batch: `max_batch_size: 0`, the graphs' own dims are used (dynamic dims as -1).",
            ]
        )
        + "\n"
    )


def _writer(written: list[Path]) -> tuple[Callable[..., None], Callable[[str, Path], None]]:
    """``put(path, text, executable=False)`` and ``copy(model source, path)``, recording into ``written``."""

    def put(path: Path, text: str, executable: bool = False) -> None:
        atomic_write_text(path, text)
        if executable:
            make_executable(path)
        written.append(path)

    def copy(src: str, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        copy_file(MODEL_SOURCES / src, dst)
        written.append(dst)

    return put, copy


def _write_denoiser(
    base: Path, record: Mapping[str, Any], io: Mapping[str, Any] | None, written: list[Path]
) -> None:
    put, copy = _writer(written)
    d = base / DENOISER_MODEL
    steps = len(record["step_configs"])
    put(
        d / "config.pbtxt",
        denoiser_config_pbtxt(
            io, record["latent_input"], record["output"], record["passthrough_inputs"], steps
        ),
    )
    copy("denoiser.py", d / "1" / "model.py")
    put(d / "1" / "denoiser.json", json.dumps(record, indent=2) + "\n")


def write_cpu_repository(
    root: Path,
    *,
    config_ids: Sequence[int],
    step_configs: Sequence[int],
    sigmas: Sequence[float],
    timesteps: Sequence[float],
    scheduler: str,
    family: str,
    io: Mapping[str, Any],
    twin: bool = False,
    name: str = CPU_REPOSITORY,
) -> list[Path]:
    """Write the CPU repository ``root/name`` (module docstring); returns the written files. ``twin``: the
    per-config models run the TensorRT twins with the weights as inputs, which the denoiser loads once
    (safetensors.numpy) and passes per request, the GPU repository's weight path on the CPU (tests use it;
    the package stage writes the plain variant only)."""
    written: list[Path] = []
    put, copy = _writer(written)
    base = root / name
    record = _denoiser_record(
        io=io,
        config_ids=config_ids,
        step_configs=step_configs,
        sigmas=sigmas,
        timesteps=timesteps,
        scheduler=scheduler,
        family=family,
        gpu=False,
        weights_device="cpu" if twin else None,
    )
    _write_denoiser(base, record, io, written)
    for k in config_ids:
        d = base / config_model_name(k)
        put(d / "config.pbtxt", cpu_config_pbtxt(k, io, twin=twin))
        copy("ort_config.py", d / "1" / "model.py")
    put(base / "launch.sh", launch_script(False), executable=True)
    put(base / "README.md", _readme(False, len(config_ids), len(step_configs)))
    return written


def write_triton_repository(
    root: Path,
    *,
    config_ids: Sequence[int],
    step_configs: Sequence[int],
    sigmas: Sequence[float],
    scheduler: str,
    family: str,
    io: Mapping[str, Any] | None,
    timesteps: Sequence[float] | None = None,
) -> list[Path]:
    """Write ``root/triton/`` and, when io.json is there, ``root/triton_cpu/`` (module docstring); returns
    the written files. ``sigmas`` has steps + 1 entries (the last 0), ``timesteps`` the model's timestep input
    per step (default: σ_i, as the Flux graphs take). Plans are symlinked only when ``root/trt/config_NN.plan``
    exists."""
    layout = OutputLayout(root)
    repo = layout.triton
    written: list[Path] = []
    put, _ = _writer(written)
    timesteps = list(sigmas[:-1]) if timesteps is None else list(timesteps)
    for k in config_ids:
        d = repo / config_model_name(k)
        put(d / "config.pbtxt", plan_config_pbtxt(k, io))
        version = d / "1"
        version.mkdir(parents=True, exist_ok=True)
        plan = layout.plan(k)
        link = version / "model.plan"
        if link.is_symlink() or link.exists():
            link.unlink()
        readme = version / "README.md"
        if plan.is_file():
            readme.unlink(missing_ok=True)
            os.symlink(os.path.relpath(plan, version), link)
        else:
            put(
                readme,
                f"# {config_model_name(k)}/1\n\nNo engine was built where this repository was generated (no TensorRT).\n"
                f"Build `trt/{plan.name}` (trtexec/build_{config_tag(k)}.sh) and place it here as "
                f"`model.plan`:\n\n    ln -s ../../../trt/{plan.name} model.plan   # or cp\n",
            )
    common: dict[str, Any] = {
        "config_ids": config_ids,
        "step_configs": step_configs,
        "sigmas": sigmas,
        "timesteps": timesteps,
        "scheduler": scheduler,
        "family": family,
    }
    record = _denoiser_record(io=io, **common, gpu=True, weights_device="cuda")
    _write_denoiser(repo, record, io, written)
    put(repo / "launch.sh", launch_script(True), executable=True)
    put(repo / "README.md", _readme(True, len(config_ids), len(step_configs)))
    cpu = root / CPU_REPOSITORY
    if io is not None and _outputs(io):
        written += write_cpu_repository(root, io=io, **common)
    elif cpu.exists():
        shutil.rmtree(cpu)
    return written
