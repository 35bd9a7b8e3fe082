"""The engine-switching runner: reads ONLY an output directory and, per denoising step i, runs the engine
of configuration ``schedule.step_configs[i]``.

Backends
--------
* ``ort``: one ONNX Runtime session per configuration (``onnx/config_NN.onnx``), created lazily; all
  sessions read the one ``onnx/weights.safetensors`` (``weights.safetensors`` is a symlink to it).
  Environment: ``ADATSQ_ORT_THREADS`` (integer) sets the sessions' intra-op thread count; unset, ORT's default.
* ``torch``: ONE QuantLinear model (weights from ``weights.safetensors``); per step its activation bits
  are switched with ``set_activation_bits`` (no weight copies). ``dtype`` (default float32, the CPU
  numerics) is the model's compute dtype; inputs are cast to it and outputs back to float32. On CUDA each
  distinct configuration's transformer call is captured once as a CUDA graph (:class:`_GraphCache`) and
  replayed per step; ``graphs=False`` or ``ADATSQ_RUNNER_GRAPHS=0`` turns that off (eager calls).
  ``fuse_projections`` (default on) runs each attention's q/k/v as one op
  (:mod:`adatsq.passes.fuse_projections`: one activation quantization and one GEMM instead of three; Flux's
  single blocks' q/k/v with proj_mlp and Z-Image's q/k/v and w1/w3 likewise): each column is its member's
  contract-1 result, so the outputs are the unfused model's (bit for bit on the CPU); Flux-dev's compiled
  step 144.7 → 134.6 ms on an H100 (BENCHMARKS.md). ``fuse_projections=False`` runs every linear alone.
* ``trt``: one deserialized TensorRT engine per configuration (``trt/config_NN.plan``, built from the
  weights-as-inputs graphs ``onnx/config_NN.trt.onnx``), the QLinear plugin library loaded first; the weights
  of ``weights.safetensors`` loaded once into device buffers bound to every engine's weight inputs, and one
  scratch buffer shared by all ``kUSER_MANAGED`` contexts (:mod:`adatsq.runtime.trt_bindings`, whose plan is
  tested on the CPU). Written to the documented TensorRT 10/11 Python API; UNVERIFIED: no TensorRT here.

Step tracking
-------------
:class:`Transformer` is a drop-in for the family's diffusers transformer (same call signature, ``.config``,
``.dtype``, ``.device``, ``return_dict``). The step index advances when the timestep VALUE changes between
calls (so Wan's two CFG calls per step and Flux's true-CFG calls count once), and restarts at 0 after
``schedule.steps`` steps (a new generation) or on :meth:`EngineRunner.reset`. With ``generate`` and
``run_sampler`` the sampler's ``before_step(i)`` sets the step explicitly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adatsq.core.layout import OutputLayout
from adatsq.core.lock import describe_holder, lock_holder, lock_path
from adatsq.export import manifest

__all__ = ["BACKENDS", "GRAPHS_ENV", "EngineRunner", "RunnerError", "StepRecord", "Transformer"]

BACKENDS = ("ort", "torch", "trt")
GRAPHS_ENV = "ADATSQ_RUNNER_GRAPHS"  # "0"/"false"/"off": no CUDA graphs in the torch backend


class RunnerError(RuntimeError):
    """The output directory cannot be run as asked; the message names the file or option at fault."""


@dataclasses.dataclass
class StepRecord:
    step: int
    config: int
    seconds: float
    calls: int


class EngineRunner:
    """Runs the compiled schedule of ``out_dir`` with ``backend`` (see the module docstring)."""

    def __init__(
        self,
        out_dir: str | Path,
        backend: str = "ort",
        device: str = "cpu",
        verify: bool = True,
        graphs: bool | None = None,
        dtype: torch.dtype | None = None,
        fuse_projections: bool = True,
    ) -> None:
        from adatsq.core.models.registry import family_of, get_spec
        from adatsq.core.schedule import load_schedule

        if backend not in BACKENDS:
            raise RunnerError(f"--backend must be one of {BACKENDS}, got {backend!r}")
        self.root = Path(out_dir)
        if (pid := lock_holder(lock_path(self.root))) is not None:
            raise RunnerError(
                f"{self.root} is being written by adatsq-compile ({describe_holder(pid)}); "
                f"run it once that compile has finished"
            )
        self.backend = backend
        self.device = device
        for required in ("schedule.json", "transformer_config.json", "weights.safetensors"):
            if not (self.root / required).is_file():
                raise RunnerError(
                    f"{self.root / required} is missing; is {self.root} a compiled output directory?"
                )
        if verify:
            self.verify_manifest()
        try:
            self.schedule = load_schedule(self.root / "schedule.json")
        except Exception as exc:
            raise RunnerError(f"{self.root / 'schedule.json'}: {exc}") from None
        self.spec = get_spec(self.schedule.model)
        self.family = family_of(self.spec)
        self.transformer_config = json.loads((self.root / "transformer_config.json").read_text())
        self.used_configs: list[int] = []
        self.steps: list[StepRecord] = []
        self._step = 0
        self._last_t: float | None = None
        self.explicit_steps = False
        self._engines: dict[int, Callable[[dict[str, np.ndarray]], np.ndarray]] = {}
        self._torch_model: nn.Module | None = None
        self._trt: _TrtEngines | None = None
        self._adapter: Any = None
        self.dtype = dtype
        self.fuse_projections = fuse_projections
        self.graphs = _graphs_enabled(graphs, backend, device)
        self._graph_cache = _GraphCache() if self.graphs else None
        self.check_engines()

    # ------------------------------------------------------------------------------------------ checks
    def verify_manifest(self) -> None:
        """If manifest.json exists, every file it lists must exist with its recorded size and sha256
        (:func:`adatsq.export.manifest.verify_manifest`, the one check of contract 3). A directory without
        one (exported, not packaged) runs unverified."""
        if not OutputLayout(self.root).manifest.exists():
            return
        problems = manifest.verify_manifest(self.root)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise RunnerError(f"{self.root}: {problems[0]}{more}")

    def engine_path(self, config: int) -> Path:
        layout = OutputLayout(self.root)
        return layout.plan(config) if self.backend == "trt" else layout.onnx_graph(config)

    def check_engines(self) -> None:
        """Every configuration the schedule names must have its engine file."""
        if self.backend == "torch":
            return
        for c in sorted(set(self.schedule.step_configs)):
            p = self.engine_path(c)
            if not p.is_file():
                raise RunnerError(f"schedule.json uses configuration {c}, but its engine {p} is missing")
        if self.backend == "ort" and not (self.root / "onnx" / "weights.safetensors").is_file():
            raise RunnerError(
                f"{self.root / 'onnx' / 'weights.safetensors'} (the weight file the graphs read) is missing"
            )

    # ------------------------------------------------------------------------------------------ engines
    @property
    def adapter(self) -> Any:
        if self._adapter is None:
            from adatsq.export.graph_io import adapter_for

            self._adapter = adapter_for(self.family.name)
        return self._adapter

    @property
    def torch_model(self) -> nn.Module:
        """The single QuantLinear model of the torch backend (also the reference for tests)."""
        if self._torch_model is None:
            from adatsq.export.onnx_export import load_quantized_model

            model = _cast_model(load_quantized_model(self.root), self.dtype).to(self.device)
            if self.fuse_projections:  # on its device: the members' buffers stay views of the fused ones
                from adatsq.passes.fuse_projections import fuse_projections

                fuse_projections(model)
            self._torch_model = model
        return self._torch_model

    def _engine(self, config: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        if config not in self._engines:
            self._engines[config] = (
                self._ort_engine(config) if self.backend == "ort" else self._trt_engine(config)
            )
        return self._engines[config]

    def _ort_engine(self, config: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """An ORT session of ``config``'s graph; ``ADATSQ_ORT_THREADS`` (an integer; unset or empty: ORT's
        default) sets its ``intra_op_num_threads`` (tests pin it: thread counts change summation order)."""
        import os

        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if os.environ.get("ADATSQ_ORT_THREADS", "").strip():
            opts.intra_op_num_threads = int(os.environ["ADATSQ_ORT_THREADS"])
        providers = ["CUDAExecutionProvider"] if self.device.startswith("cuda") else []
        providers.append("CPUExecutionProvider")
        available = set(ort.get_available_providers())
        try:
            sess = ort.InferenceSession(
                str(self.engine_path(config)), opts, providers=[p for p in providers if p in available]
            )
        except Exception as exc:
            raise RunnerError(f"{self.engine_path(config)}: ONNX Runtime cannot load it ({exc})") from None
        names = {i.name for i in sess.get_inputs()}

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]

        return run

    def _trt_engine(self, config: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """``config``'s engine in the one :class:`_TrtEngines` of this runner (all engines, one weight copy, one
        scratch buffer). UNVERIFIED: written to the TensorRT 10/11 Python API, never executed (no TensorRT)."""
        if self._trt is None:
            self._trt = _TrtEngines(self.root, sorted(set(self.schedule.step_configs)), self.device)
        return lambda feeds: self._trt.run(config, feeds)  # type: ignore[union-attr]

    # ------------------------------------------------------------------------------------------ stepping
    def reset(self) -> None:
        self._step = 0
        self._last_t = None
        self.explicit_steps = False
        self.used_configs = []
        self.steps = []

    def set_step(self, step: int) -> None:
        """Explicit step index (the sampler's ``before_step`` hook)."""
        if not 0 <= step < self.schedule.steps:
            raise RunnerError(f"step {step} is outside the schedule's {self.schedule.steps} steps")
        if step == 0:
            self.reset()
        self._step = step
        self._last_t = None
        self.explicit_steps = True
        self._begin_step()

    def _begin_step(self) -> None:
        config = self.schedule.step_configs[self._step]
        self.used_configs.append(config)
        self.steps.append(StepRecord(self._step, config, 0.0, 0))
        if self.backend == "torch":
            from adatsq.passes.quant_linear import set_activation_bits

            set_activation_bits(self.torch_model, self.schedule.bits_at(self._step))

    def observe_timestep(self, t: float) -> None:
        """Pipeline integration: a new timestep value starts the next step (first call: step 0)."""
        if self._last_t is None and not self.steps:
            self._step = 0
            self._begin_step()
        elif self._last_t is not None and t != self._last_t:
            nxt = self._step + 1
            if nxt >= self.schedule.steps:
                self.reset()
                nxt = 0
            self._step = nxt
            self._begin_step()
        self._last_t = t

    @property
    def current_config(self) -> int:
        return self.schedule.step_configs[self._step]

    def call(self, kwargs: Mapping[str, Any], args: tuple[Any, ...] = ()) -> torch.Tensor:
        """One transformer call at the current step: the transformer's own arguments in, its sample out."""
        if not self.steps:
            self._begin_step()
        start = time.perf_counter()
        if self.backend == "torch":
            # the shim reports the CPU: inputs go to the model's device and back
            out = self.call_device(kwargs, args)
            out = _to(out, "cpu", torch.float32 if self.dtype not in (None, torch.float32) else None)
        else:
            if args:
                kwargs = {**dict(zip(("hidden_states", "timestep", "encoder_hidden_states"), args)), **kwargs}
            kwargs = {
                k: v for k, v in kwargs.items() if k not in ("joint_attention_kwargs", "attention_kwargs")
            }
            feeds = self.adapter.feeds(self.torch_config, kwargs)
            out = torch.from_numpy(self._engine(self.current_config)(feeds))
        rec = self.steps[-1]
        rec.seconds += time.perf_counter() - start
        rec.calls += 1
        return out

    def call_device(self, kwargs: Mapping[str, Any], args: tuple[Any, ...] = ()) -> Any:
        """The torch backend's transformer call at the current configuration, output left on the device in
        the model's dtype: inputs are moved (and floating ones cast) to the model; on CUDA with graphs on, the
        configuration's CUDA graph is replayed (captured on first use, :class:`_GraphCache`)."""
        model = self.torch_model
        args = _to(args, self.device, self.dtype)
        kwargs = _to({**kwargs, "return_dict": False}, self.device, self.dtype)
        if self._graph_cache is not None:
            from adatsq.passes.quant_linear import set_activation_bits

            config = self.current_config
            bits = self.schedule.bits_at(self._step)
            return self._graph_cache.run(
                config, lambda: set_activation_bits(model, bits), model, args, kwargs
            )
        with torch.no_grad():
            return model(*args, **kwargs)[0]

    @property
    def torch_config(self) -> Any:
        from diffusers.configuration_utils import FrozenDict

        return FrozenDict(self.transformer_config)

    # ------------------------------------------------------------------------------------------ sampling
    def transformer(self) -> Transformer:
        """A diffusers-compatible stand-in for the family's transformer."""
        return Transformer(self)

    def generate(
        self, seed: int = 0, n: int = 1, steps: int | None = None, resolution: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """Final latents of ``n`` samples: synthetic conditioning exactly as compile builds it
        (``family.synthetic_conditioning`` with a generator seeded by ``seed``), noise from the same
        generator, and the family's real sampling loop with this runner as the transformer."""
        from adatsq.core.models.base import run_sampler

        steps = self.schedule.steps if steps is None else steps
        if steps != self.schedule.steps:
            raise RunnerError(
                f"--steps {steps} differs from the schedule's {self.schedule.steps} steps; the engines were "
                f"chosen per step, recompile with --steps {steps}"
            )
        resolution = tuple(resolution or self.schedule.resolution)
        shim = self.transformer()
        g = torch.Generator().manual_seed(seed)
        cond = self.family.synthetic_conditioning(self.spec, shim, n, g)
        noise = self.family.sample_noise(self.spec, shim, resolution, n, g)
        self.reset()
        try:
            return run_sampler(self.family, self.spec, shim, noise, cond, steps, before_step=self.set_step)
        finally:
            self.explicit_steps = False


class _TrtEngines:
    """All engines of an output directory on one CUDA device (TensorRT 10.1+/11 Python API; UNVERIFIED).

    * The plugin library (``find_plugin_library``: ``$ADATSQ_TRT_PLUGIN``, ``<out>/plugins/``, the repository
      build) is loaded before any engine is deserialized: the ``getCreators`` variant through the plugin
      registry's ``load_library``, the static-registration variant by ``ctypes.CDLL`` (its registrar runs on
      load); an engine whose plugin is not registered cannot be deserialized.
    * Each plan is deserialized once; io.json, the safetensors header and every engine's I/O give the
      :class:`~adatsq.runtime.trt_bindings.BindingPlan`; each weight key is uploaded once and its address set
      on every context that takes it; one scratch buffer of ``max device_memory_size_v2`` backs all contexts
      (``USER_MANAGED``, ``set_device_memory``).
    * A call: inputs are copied to the device on torch's CURRENT stream and TensorRT is enqueued on that same
      stream (no cross-stream race); ``set_input_shape``'s result is checked; outputs get the engine's dtype
      (``get_tensor_dtype``) and are returned as float32 numpy (the runner's interface), which synchronises.
    """

    def __init__(self, root: Path, configs: list[int], device: str) -> None:
        from adatsq.export.trt_build import find_plugin_library
        from adatsq.export.trtexec import PLUGIN_LIBRARY_DYNAMIC
        from adatsq.runtime import trt_bindings as tb

        try:
            import tensorrt as trt  # noqa: TID251 - lazy import in runtime/, allowed by DESIGN.md
        except ImportError:
            raise RunnerError(
                "--backend trt needs the tensorrt Python package, which is not installed"
            ) from None
        if not str(device).startswith("cuda"):
            raise RunnerError(f"--backend trt runs on a CUDA device, not {device!r}")
        layout = OutputLayout(root)
        self.trt = trt
        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")
        lib = find_plugin_library(layout)
        if lib is None or not lib.is_file():
            raise RunnerError(
                f"the QLinear plugin library is missing ({layout.plugins} or $ADATSQ_TRT_PLUGIN); build it: "
                f"see {layout.plugins / 'BUILD.json'}"
            )
        runtime = trt.Runtime(self.logger)
        if lib.name == PLUGIN_LIBRARY_DYNAMIC:
            if not runtime.get_plugin_registry().load_library(str(lib)):
                raise RunnerError(f"{lib}: TensorRT's plugin registry could not load it")
        else:
            import ctypes

            self._plugin_handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        self.runtime = runtime
        self.engines: dict[int, Any] = {}
        for c in configs:
            path = layout.plan(c)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RunnerError(f"{path}: TensorRT could not deserialize the engine (plugin {lib} loaded)")
            self.engines[c] = engine
        io = json.loads((root / "onnx" / "io.json").read_text())
        weights_path = root / "onnx" / "weights.safetensors"
        try:
            self.plan = tb.BindingPlan.build(
                io,
                [tb.engine_io(c, e, lambda m: m == trt.TensorIOMode.INPUT) for c, e in self.engines.items()],
                tb.read_safetensors_header(weights_path),
            )
        except tb.BindingError as exc:
            raise RunnerError(f"{root}: {exc}") from None
        self.buffers = tb.load_weight_buffers(weights_path, self.plan, device)  # once, for every engine
        self.scratch = torch.empty(max(1, self.plan.scratch_bytes), dtype=torch.uint8, device=self.device)
        bound = self.plan.addresses(
            {k: t.data_ptr() for k, t in self.buffers.items()}, self.scratch.data_ptr()
        )
        self.contexts: dict[int, Any] = {}
        for c, engine in self.engines.items():
            ctx = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if ctx is None:
                raise RunnerError(f"TensorRT could not create an execution context for configuration {c}")
            ctx.set_device_memory(bound[c][""], self.plan.scratch_bytes)
            for name, addr in bound[c].items():
                if name and not ctx.set_tensor_address(name, addr):
                    raise RunnerError(
                        f"configuration {c}: TensorRT rejected the address of weight input {name}"
                    )
            self.contexts[c] = ctx

    def run(self, config: int, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        from adatsq.runtime.trt_bindings import BindingError

        ctx, plan = self.contexts[config], self.plan.engines[config]
        stream = torch.cuda.current_stream(self.device)
        keep = []
        for name in plan.activations:
            if name not in feeds:
                raise RunnerError(f"configuration {config}: no value for engine input {name}")
            value = torch.from_numpy(np.ascontiguousarray(feeds[name]))
            try:
                self.plan.check_shape(name, tuple(value.shape))
            except BindingError as exc:
                raise RunnerError(str(exc)) from None
            want = _TORCH_DTYPES[trt_dtype(self.engines[config], name)]
            t = value.to(device=self.device, dtype=want, non_blocking=True)  # on the current stream
            keep.append(t)
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise RunnerError(
                    f"configuration {config}: TensorRT rejected input {name} of shape {list(t.shape)}"
                )
            ctx.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name, dtype in plan.outputs.items():
            shape = tuple(ctx.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=_TORCH_DTYPES[dtype], device=self.device)
            ctx.set_tensor_address(name, outs[name].data_ptr())
        if not ctx.execute_async_v3(stream.cuda_stream):  # the stream the inputs were copied on
            raise RunnerError(f"TensorRT execution of configuration {config} failed")
        out = next(iter(outs.values()))
        return out.float().cpu().numpy()  # the device-to-host copy waits for the stream


_TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}


def trt_dtype(engine: Any, name: str) -> str:
    """The io.json dtype name of ``engine``'s tensor ``name`` (``get_tensor_dtype``)."""
    from adatsq.runtime.trt_bindings import TRT_DTYPES

    return TRT_DTYPES[engine.get_tensor_dtype(name).name]


def _to(value: Any, device: str, dtype: torch.dtype | None = None) -> Any:
    """``value`` with every tensor in it (also inside lists, tuples and dicts) moved to ``device``, floating
    tensors cast to ``dtype`` when one is given."""
    if isinstance(value, torch.Tensor):
        cast = dtype if (dtype is not None and value.is_floating_point()) else None
        return value.to(device=device, dtype=cast)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device, dtype) for k, v in value.items()}
    return value


def _graphs_enabled(graphs: bool | None, backend: str, device: str) -> bool:
    """CUDA graphs are used by the torch backend on a CUDA device only; ``graphs`` (None: the
    ``ADATSQ_RUNNER_GRAPHS`` variable, unset meaning on) can turn them off, never on elsewhere."""
    import os

    if graphs is None:
        graphs = os.environ.get(GRAPHS_ENV, "1").strip().lower() not in ("0", "false", "off", "no")
    return bool(graphs) and backend == "torch" and str(device).startswith("cuda")


def _cast_model(model: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """``model`` in compute dtype ``dtype`` (None: unchanged, float32). Modules the class keeps in float32
    (``_keep_in_fp32_modules``, as diffusers' ``from_pretrained``) stay float32; QuantLinear keeps its float16
    scales and float32 biases (``QuantLinear._apply``)."""
    if dtype is None or dtype == torch.float32:
        return model
    model = model.to(dtype)
    keep = set(getattr(type(model), "_keep_in_fp32_modules", None) or ())
    for name, p in model.named_parameters():
        if keep & set(name.split(".")):
            p.data = p.data.float()
    return model


@dataclasses.dataclass
class _Graph:
    """One captured transformer call: static input leaves (copied into per replay), its output."""

    graph: Any
    inputs: list[torch.Tensor]
    output: Any


class _GraphCache:
    """One CUDA graph per configuration of the torch backend, for one input signature.

    A call's inputs are flattened (``torch.utils._pytree``) into tensor leaves; the signature is the tree
    structure, every tensor leaf's (shape, dtype, device) and every non-tensor leaf's value. On first use of a
    configuration, ``prepare()`` sets the model's activation bits for it (they are Python ints baked into the
    captured kernels), the call runs twice eagerly on a side stream (Triton JIT, lazily built device tables and
    workspaces-size queries happen outside the capture) and is captured; all graphs share one memory pool,
    since they are replayed one at a time (intermediates of different configurations may alias; each graph's
    static output stays alive). A new signature invalidates every graph (they are dropped and recaptured).
    Replay: ``copy_`` each input into its static buffer, replay, return a clone of the static output. A call
    that fails to capture (an op that syncs the host) falls back to eager for that configuration, with one
    warning; ``errors`` keeps why.
    """

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = warmup
        self.graphs: dict[int, _Graph | None] = {}
        self.signature: Any = None
        self.errors: dict[int, str] = {}
        self.captures = 0
        self.replays = 0
        self._pool: Any = None

    def invalidate(self) -> None:
        # the dropped graphs were the pool's only users, so CUDA frees it with them: a capture into the old
        # handle then fails in the caching allocator (``use_count > 0`` INTERNAL ASSERT, seen on the H100)
        self.graphs.clear()
        self.errors.clear()
        self.signature = None
        self._pool = None

    def run(
        self,
        config: int,
        prepare: Callable[[], None],
        model: nn.Module,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        from torch.utils import _pytree

        leaves, spec = _pytree.tree_flatten((args, dict(kwargs)))
        signature = (
            str(spec),
            tuple(
                (tuple(v.shape), v.dtype, str(v.device))
                if isinstance(v, torch.Tensor)
                else ("value", repr(v))
                for v in leaves
            ),
        )
        if signature != self.signature:
            self.invalidate()
            self.signature = signature
        if config not in self.graphs:
            prepare()
            self.graphs[config] = self._capture(config, model, leaves, spec)
        entry = self.graphs[config]
        if entry is None:  # capture failed: eager
            prepare()
            a, kw = _pytree.tree_unflatten(leaves, spec)
            with torch.no_grad():
                return model(*a, **kw)[0]
        for static, value in zip(
            entry.inputs, (v for v in leaves if isinstance(v, torch.Tensor)), strict=True
        ):
            static.copy_(value)
        entry.graph.replay()
        self.replays += 1
        return _clone(entry.output)

    def _capture(self, config: int, model: nn.Module, leaves: list[Any], spec: Any) -> _Graph | None:
        import warnings

        from torch.utils import _pytree

        static_leaves = [v.clone() if isinstance(v, torch.Tensor) else v for v in leaves]
        inputs = [v for v in static_leaves if isinstance(v, torch.Tensor)]
        a, kw = _pytree.tree_unflatten(static_leaves, spec)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(self.warmup):
                    model(*a, **kw)
            torch.cuda.current_stream().wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool), torch.no_grad():
                output = model(*a, **kw)[0]
        except Exception as exc:  # an op that cannot be captured: this configuration runs eagerly
            self.errors[config] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"CUDA graph capture of configuration {config} failed ({self.errors[config][:200]}); "
                f"running it eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        self.captures += 1
        return _Graph(graph, inputs, output)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


class Transformer(nn.Module):
    """Drop-in for the family's diffusers transformer, backed by an :class:`EngineRunner`.

    ``forward`` takes the family transformer's keyword arguments (Flux: hidden_states, timestep, guidance,
    pooled_projections, encoder_hidden_states, txt_ids, img_ids, joint_attention_kwargs, return_dict;
    Wan: hidden_states, timestep, encoder_hidden_states, attention_kwargs, return_dict) and returns
    ``(sample,)`` or an object with ``.sample``. Outside ``generate`` the step is tracked from the timestep
    value (module docstring of :mod:`adatsq.runtime.runner`).
    """

    def __init__(self, runner: EngineRunner) -> None:
        super().__init__()
        from diffusers.configuration_utils import FrozenDict

        self.runner = runner
        self.config = FrozenDict(runner.transformer_config)
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # .dtype/.device/parameters()

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def in_channels(self) -> int:  # ZImagePipeline reads transformer.in_channels
        return int(self.config["in_channels"])

    def cache_context(self, name: str, **where: Any) -> contextlib.AbstractContextManager[None]:
        """diffusers' CacheMixin hook (Flux/Wan pipelines wrap each call in it, Wan with ``step_index``);
        engines keep no cache, and the step is tracked from the timestep as for every pipeline."""
        return contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        # positional calls (Z-Image: x, t, cap_feats) pass through unchanged to the torch backend
        if not self.runner.explicit_steps:
            t = (
                kwargs["timestep"]
                if "timestep" in kwargs
                else (kwargs.get("t") if "t" in kwargs else args[1])
            )
            self.runner.observe_timestep(float(torch.as_tensor(t).reshape(-1)[0]))
        out = self.runner.call(kwargs, args)
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=out)
