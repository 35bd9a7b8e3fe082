"""adatsq BLS denoiser (Triton python backend): the whole denoising loop, one per-config model call per step.

Copied by adatsq (export/triton.py) to ``<repository>/adatsq_denoiser/1/model.py``, with ``denoiser.json``
beside it. Step i sends the latent x_i and the timestep value τ_i to ``step_models[i]`` (the Triton model of
the schedule's configuration of step i) through ``pb_utils.InferenceRequest(...).exec()``, receives the
velocity v_i and applies the flow-matching Euler update in float32,

    x_{i+1} = x_i + (σ_{i+1} − σ_i) · v_i,

with σ the scheduler's own float32 sigmas (steps + 1 values, the last 0) and τ_i the float32 timestep the
runner feeds (Flux: t_i / 1000), both written by the package stage from the real diffusers scheduler, so each
step performs the same IEEE float32 operations as diffusers' ``FlowMatchEulerDiscreteScheduler.step``.
The Euler update is elementwise, so it is the same on the packed latent tokens the engines take.

Outputs: ``latent_out`` (x_steps) and, per step, ``step_latents`` (x_i), ``step_timesteps`` (τ_i),
``step_velocities`` (v_i) and ``step_config_ids`` (the configuration that answered: the per-config model's
own ``adatsq_config_id`` output where it has one (the CPU repository), else the one the schedule names).

Tensors cross the stub as DLPack (``np.from_dlpack`` / ``pb_utils.Tensor.from_dlpack``), never through
``Tensor.as_numpy()`` / ``pb_utils.Tensor(name, ndarray)``: the python-backend stub of tritonserver 2.51 is
built against numpy 1's C ABI, and under numpy 2 those two return wrong data without an error (seen here:
``as_numpy()`` of [1, 2, 3] gave [1, 1, 1]); the DLPack protocol does not depend on numpy's ABI.

Weight inputs (``denoiser.json`` ``weights``; the tensorrt_plan repository only): the engines take the
packed weights as inputs (issue 16's shared decision). This model loads ``weights.safetensors`` ONCE at
initialize (on the GPU with safetensors.torch) and passes the step model's weight inputs with every request,
as DLPack views of those buffers. NOT RUN: there is no GPU, tensorrt backend or torch in the server here;
see the module docstring of adatsq/export/triton.py for what the stock tensorrt backend does with them.

Supported: FlowMatchEulerDiscreteScheduler, the Flux family (timestep input = σ, embedded guidance as an
ordinary input, no classifier-free guidance). initialize() refuses other schedulers and families.
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _array(tensor: Any, dtype: Any = None) -> np.ndarray:
    """A numpy copy of a pb_utils.Tensor through DLPack (module docstring)."""
    a = np.from_dlpack(tensor)
    return np.array(a, dtype=dtype if dtype is not None else a.dtype, copy=True)


def _tensor(name: str, array: np.ndarray) -> Any:
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "denoiser.json")) as f:
            cfg = json.load(f)
        if cfg["scheduler"] not in cfg["supported_schedulers"]:
            raise pb_utils.TritonModelException(
                "adatsq denoiser supports only FlowMatchEulerDiscreteScheduler, not " + cfg["scheduler"]
            )
        if cfg["family"] != "flux":
            raise pb_utils.TritonModelException(
                "adatsq denoiser supports the Flux family only (no CFG, no reversed timesteps); got "
                + cfg["family"]
            )
        self.step_models = list(cfg["step_models"])
        self.step_configs = [int(c) for c in cfg["step_configs"]]
        self.timesteps = np.asarray(cfg["timesteps"], dtype=np.float32)
        self.sigmas = np.asarray(cfg["sigmas"], dtype=np.float32)
        if len(self.timesteps) != len(self.step_models) or len(self.sigmas) != len(self.step_models) + 1:
            raise pb_utils.TritonModelException(
                f"denoiser.json: {len(self.step_models)} step models need as many timesteps (got "
                f"{len(self.timesteps)}) and one more sigma (got {len(self.sigmas)})"
            )
        self.latent = cfg["latent_input"]
        self.latent_dtype = np.dtype(cfg["latent_dtype"])
        self.timestep = cfg["timestep_input"]
        self.timestep_dtype = np.dtype(cfg["timestep_dtype"])
        self.output = cfg["output"]
        self.output_dtype = np.dtype(cfg["output_dtype"])
        self.passthrough = list(cfg["passthrough_inputs"])
        self.identity = cfg.get("identity_output")
        self.weights = self._load_weights(args["model_repository"], cfg.get("weights"))
        # the step models' outputs in host memory (a tensorrt model's are on the GPU): the update runs in numpy
        self.host_memory = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)

    def _load_weights(self, model_dir: str, spec: dict[str, Any] | None) -> dict[str, list[tuple[str, Any]]]:
        """{step model: [(input name, tensor)]}: weights.safetensors read once (module docstring; NOT RUN)."""
        if not spec or not any(spec["per_model"].values()):
            return {}
        path = os.path.normpath(os.path.join(model_dir, spec["file"]))
        if spec.get("device", "cuda") == "cuda":
            from safetensors.torch import load_file

            tensors = load_file(path, device="cuda")
        else:
            from safetensors.numpy import load_file

            tensors = load_file(path)
        return {
            model: [(name, tensors[key]) for name, key in pairs] for model, pairs in spec["per_model"].items()
        }

    def _weight_inputs(self, model: str) -> list[Any]:
        return [pb_utils.Tensor.from_dlpack(name, t) for name, t in self.weights.get(model, [])]

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._generate(request) for request in requests]

    def _generate(self, request: Any) -> Any:
        latent = pb_utils.get_input_tensor_by_name(request, self.latent)
        if latent is None:
            return self._error(f"request has no input {self.latent!r}")
        x = _array(latent, np.float32)
        extra = []
        for name in self.passthrough:
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is not None:
                extra.append(t)
        batch = x.shape[0]
        requested = [self.output] + ([self.identity] if self.identity else [])
        latents, taus, velocities, answered = [], [], [], []
        for i, model in enumerate(self.step_models):
            tau = np.full((batch,), self.timesteps[i], dtype=self.timestep_dtype)
            inputs = [
                _tensor(self.latent, x.astype(self.latent_dtype, copy=False)),
                _tensor(self.timestep, tau),
                *extra,
                *self._weight_inputs(model),
            ]
            result = pb_utils.InferenceRequest(
                model_name=model,
                requested_output_names=requested,
                inputs=inputs,
                preferred_memory=self.host_memory,
            ).exec()
            if result.has_error():
                return self._error(f"step {i} ({model}): {result.error().message()}")
            v = _array(pb_utils.get_output_tensor_by_name(result, self.output), np.float32)
            if self.identity:
                answered.append(int(_array(pb_utils.get_output_tensor_by_name(result, self.identity))[0]))
            else:
                answered.append(self.step_configs[i])
            latents.append(x)
            taus.append(tau.astype(np.float32))
            velocities.append(v)
            dt = self.sigmas[i + 1] - self.sigmas[i]  # float32 − float32, as diffusers' scheduler
            x = x + dt * v
        outputs = [
            _tensor("latent_out", x.astype(self.output_dtype, copy=False)),
            _tensor("step_latents", np.stack(latents)),
            _tensor("step_timesteps", np.stack(taus)),
            _tensor("step_velocities", np.stack(velocities)),
            _tensor("step_config_ids", np.asarray(answered, dtype=np.int32)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def _error(self, message: str) -> Any:
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def finalize(self) -> None:
        self.weights = {}
