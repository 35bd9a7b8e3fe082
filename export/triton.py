"""The Triton Inference Server model repository (``<out>/triton/``), reference/tensorrt.md §6, §9c "stock path".

Layout::

    triton/
      adatsq_config_NN/config.pbtxt      platform "tensorrt_plan", one per distinct configuration
      adatsq_config_NN/1/model.plan      symlink to ../../../trt/config_NN.plan when the engine exists,
                                         else README.md saying where the plan goes (no fake plans)
      adatsq_denoiser/config.pbtxt       Python backend, BLS
      adatsq_denoiser/1/model.py         loops over the steps, calls adatsq_config_{step_configs[i]} per step,
                                         applies the flow-matching Euler update
      adatsq_denoiser/1/denoiser.json    steps, sigmas, per-step config ids, tensor names
      README.md                          how to start tritonserver with the plugin library

Ensembles cannot express the loop (reference §6), hence the Python BLS model. Every engine gets its own
activation memory in the stock TensorRT backend (no USER_MANAGED scratch); weights are shared only through
the plugin's weight store. Not run against a real Triton server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adatsq.core.atomic import atomic_write_text
from adatsq.core.layout import OutputLayout, config_tag
from adatsq.export.trtexec import PLUGIN_LIBRARY

__all__ = [
    "DENOISER_MODEL",
    "SUPPORTED_SCHEDULERS",
    "config_model_name",
    "denoiser_config_pbtxt",
    "plan_config_pbtxt",
    "triton_dtype",
    "write_triton_repository",
]

DENOISER_MODEL = "adatsq_denoiser"
SUPPORTED_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)

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


def plan_config_pbtxt(k: int, io: Mapping[str, Any] | None) -> str:
    """``config.pbtxt`` of one engine. ``max_batch_size: 0``: the graphs carry their own batch dimension
    (dynamic dims as -1). Without io.json, inputs/outputs are left to Triton's auto-complete for plans."""
    lines = [
        f"# adatsq engine for activation configuration {k} (generated; see triton/README.md)",
        f'name: "{config_model_name(k)}"',
        'platform: "tensorrt_plan"',
        "max_batch_size: 0",
        'default_model_filename: "model.plan"',
    ]
    if io is not None:
        lines += _tensor_block("input", io.get("inputs", []))
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


def denoiser_config_pbtxt(
    io: Mapping[str, Any] | None, latent_input: str, output: str, passthrough: Sequence[str]
) -> str:
    """``config.pbtxt`` of the Python BLS denoiser: inputs are the initial noise (the engines' latent input)
    and the per-request conditioning the engines take (everything but the timestep); output the final
    latent in the same packed layout."""
    by_name = {t["name"]: t for t in (io or {}).get("inputs", [])}
    outs = {t["name"]: t for t in _outputs(io)}
    inputs = [by_name.get(latent_input, {"name": latent_input, "dtype": "float32", "shape": [-1, -1, -1]})]
    inputs += [by_name[n] for n in passthrough if n in by_name]
    out = dict(outs.get(output, {"name": output, "dtype": "float32", "shape": [-1, -1, -1]}))
    out["name"] = "latent_out"
    lines = [
        "# adatsq BLS denoiser: runs the whole denoising loop, one adatsq_config_NN call per step (generated)",
        f'name: "{DENOISER_MODEL}"',
        'backend: "python"',
        "max_batch_size: 0",
        *_tensor_block("input", inputs),
        *_tensor_block("output", [out]),
        "instance_group [",
        "  {",
        "    kind: KIND_CPU",
        "    count: 1",
        "  }",
        "]",
    ]
    return "\n".join(lines) + "\n"


_MODEL_PY = '''"""adatsq BLS denoiser (Triton Python backend), generated by adatsq export/triton.py.

Loops over the denoising steps; step i calls the TensorRT model ``adatsq_config_{step_configs[i]:02d}`` with
pb_utils.InferenceRequest and applies the flow-matching Euler update x <- x + (sigma[i+1] - sigma[i]) * v.

Supported: FlowMatchEulerDiscreteScheduler (the sigmas of denoiser.json, final sigma 0), Flux-family
transformers (timestep input = sigma, embedded guidance as a normal input, no classifier-free guidance).
NOT supported (initialize() refuses): other schedulers (DPM-Solver, UniPC, Euler ancestral / stochastic
samplers), classifier-free guidance with two model calls per step (Wan 2.1), Z-Image's reversed timestep and
negated velocity convention. Tensors go through host memory here (numpy); a GPU-resident variant would use
DLPack (to_dlpack/from_dlpack) with preferred_memory=TRITONSERVER_MEMORY_GPU.
NOT run against a real Triton server where it was generated.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "denoiser.json")) as f:
            self.cfg = json.load(f)
        if self.cfg["scheduler"] not in self.cfg["supported_schedulers"]:
            raise pb_utils.TritonModelException(
                "adatsq denoiser supports only FlowMatchEulerDiscreteScheduler, not " + self.cfg["scheduler"]
            )
        if self.cfg["family"] != "flux":
            raise pb_utils.TritonModelException(
                "adatsq denoiser supports the Flux family only (no CFG / reversed timesteps); got "
                + self.cfg["family"]
            )
        self.sigmas = [float(s) for s in self.cfg["sigmas"]]
        self.step_models = list(self.cfg["step_models"])
        self.latent = self.cfg["latent_input"]
        self.timestep = self.cfg["timestep_input"]
        self.output = self.cfg["output"]
        self.passthrough = list(self.cfg["passthrough_inputs"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, self.latent).as_numpy().astype(np.float32)
            extra = []
            for name in self.passthrough:
                t = pb_utils.get_input_tensor_by_name(request, name)
                if t is not None:
                    extra.append(pb_utils.Tensor(name, t.as_numpy()))
            batch = x.shape[0]
            error = None
            for i, model in enumerate(self.step_models):
                t_value = self.sigmas[i] * self.cfg["timestep_scale"]
                inputs = [
                    pb_utils.Tensor(self.latent, x.astype(self.cfg["latent_dtype"])),
                    pb_utils.Tensor(
                        self.timestep, np.full((batch,), t_value, dtype=self.cfg["timestep_dtype"])
                    ),
                    *extra,
                ]
                infer = pb_utils.InferenceRequest(
                    model_name=model, requested_output_names=[self.output], inputs=inputs
                )
                result = infer.exec()
                if result.has_error():
                    error = pb_utils.TritonError(
                        "step %d (%s): %s" % (i, model, result.error().message())
                    )
                    break
                v = pb_utils.get_output_tensor_by_name(result, self.output).as_numpy().astype(np.float32)
                x = x + (self.sigmas[i + 1] - self.sigmas[i]) * v
            if error is not None:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                out = pb_utils.Tensor("latent_out", x.astype(self.cfg["output_dtype"]))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses

    def finalize(self):
        pass
'''


def _np_dtype(dtype: str) -> str:
    d = str(dtype).lower().removeprefix("torch.").removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "half": "float16", "bfloat16": "float32"}.get(d, d)


def write_triton_repository(
    root: Path,
    *,
    config_ids: Sequence[int],
    step_configs: Sequence[int],
    sigmas: Sequence[float],
    scheduler: str,
    family: str,
    io: Mapping[str, Any] | None,
) -> list[Path]:
    """Write ``root/triton/`` (see module docstring); returns the written files. ``sigmas`` has steps + 1
    entries (the last 0). Plans are symlinked only when ``root/trt/config_NN.plan`` exists."""
    layout = OutputLayout(root)
    repo = layout.triton
    written: list[Path] = []

    def put(path: Path, text: str) -> None:
        atomic_write_text(path, text)
        written.append(path)

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
    inputs = [t["name"] for t in (io or {}).get("inputs", [])]
    outputs = [t["name"] for t in _outputs(io)]
    latent = "hidden_states" if "hidden_states" in inputs or not inputs else inputs[0]
    timestep = "timestep"
    output = outputs[0] if outputs else "output"
    passthrough = [n for n in inputs if n not in (latent, timestep)]
    dtypes = {t["name"]: t.get("dtype", "float32") for t in (io or {}).get("inputs", [])}
    out_dtypes = {t["name"]: t.get("dtype", "float32") for t in _outputs(io)}
    den = repo / DENOISER_MODEL
    put(den / "config.pbtxt", denoiser_config_pbtxt(io, latent, output, passthrough))
    put(den / "1" / "model.py", _MODEL_PY)
    put(
        den / "1" / "denoiser.json",
        json.dumps(
            {
                "scheduler": scheduler,
                "supported_schedulers": list(SUPPORTED_SCHEDULERS),
                "family": family,
                "sigmas": [float(s) for s in sigmas],
                "step_configs": [int(c) for c in step_configs],
                "step_models": [config_model_name(int(c)) for c in step_configs],
                "latent_input": latent,
                "latent_dtype": _np_dtype(dtypes.get(latent, "float32")),
                "timestep_input": timestep,
                "timestep_dtype": _np_dtype(dtypes.get(timestep, "float32")),
                "timestep_scale": 1.0,
                "output": output,
                "output_dtype": _np_dtype(out_dtypes.get(output, "float32")),
                "passthrough_inputs": passthrough,
            },
            indent=2,
        )
        + "\n",
    )
    put(
        repo / "README.md",
        "\n".join(
            [
                "# Triton model repository (generated by adatsq; not run against a real Triton server)",
                "",
                f"* `adatsq_config_NN`: one TensorRT plan per activation configuration ({len(config_ids)} here).",
                f"* `{DENOISER_MODEL}`: Python-backend BLS model running the whole denoising loop "
                f"({len(step_configs)} steps), calling `adatsq_config_NN` per step (FlowMatchEuler, Flux only).",
                "",
                "The QLinear plugin must be registered in the server process. Either",
                "",
                "    tritonserver --model-repository=$PWD/triton \\",
                f"        --backend-config=tensorrt,plugins=$PWD/plugins/{PLUGIN_LIBRARY}",
                "",
                "(the backend only dlopens the library, so it must use static registration, which "
                f"`{PLUGIN_LIBRARY}` does), or",
                "",
                f"    LD_PRELOAD=$PWD/plugins/{PLUGIN_LIBRARY} tritonserver --model-repository=$PWD/triton",
                "",
                "Load the library by one mechanism only (a second registration of the same creators fails).",
                "Every engine has its own activation memory in the stock TensorRT backend (no shared scratch);",
                "the C++ runner shares one scratch buffer and captures one CUDA graph per configuration.",
                "Batch: `max_batch_size: 0`, the graphs' own dims are used (dynamic dims as -1).",
            ]
        )
        + "\n",
    )
    return written
