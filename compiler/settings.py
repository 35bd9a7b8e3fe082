"""``CompileConfig``: every knob of one compile, filled in by the CLI or the Python API (one place for
defaults). Round-trips through JSON (written to ``<out>/compile_config.json``) and rejects unknown keys."""

from __future__ import annotations

import dataclasses
import re

from adatsq.core.config import JsonConfig
from adatsq.core.contract import WEIGHT_BITS  # contract 1's weight widths: 3, 4, 8
from adatsq.core.errors import CompileError
from adatsq.core.models.base import ModelSpec
from adatsq.plugins.reference import WEIGHT_GRANULARITIES

__all__ = [
    "ALPHAS",
    "METHODS",
    "METHOD_PRESETS",
    "METRICS",
    "SALIENCES",
    "STAGE_NAMES",
    "WEIGHT_BITS",
    "WEIGHT_METHODS",
    "WEIGHT_GRANULARITIES",
    "WEIGHT_SCALES",
    "CompileConfig",
    "default_of",
]

STAGE_NAMES = ("load", "calibrate", "search", "quantize", "export", "build", "package")
#: the stages that use the compile device; export, build and package read the quantize stage's files on the CPU
GPU_STAGES = ("load", "calibrate", "search", "quantize")
METRICS = ("latent", "clip", "geneval")
#: the method and its ablations (the quality table of BENCHMARKS.md): weights by Fisher-weighted GPTQ or
#: round-to-nearest; GPTQ's per-layer step weights α from the Fisher softmax or uniform (1/steps); the
#: weight scales of plugins/reference.SCALE_METHODS
WEIGHT_METHODS = ("gptq", "rtn")
ALPHAS = ("fisher", "uniform")
WEIGHT_SCALES = ("absmax", "mse")
#: GPU memory GPTQ needs beside the Hessian accumulators and the model (its float64 Cholesky and column loop
#: of the widest layer, the replay's activations): 12.2 GiB measured for Flux-dev (K up to 15360) on the H200,
#: before the Cholesky chain freed its buffers as it went; the stage takes more for a wider layer
#: (calib/gptq.gptq_peak_bytes). The layers' codes leave the GPU as they are made, so they take none of it.
GPTQ_RESERVE_GB = 14.0
#: ``--method``: a named method is a preset of the options below (the baselines of the paper's Table 1 that are
#: this pipeline with other settings). ``rtn``: per-group round-to-nearest weights, no rotation, uniform bits.
#: ``quarot``: Hadamard rotation and GPTQ weights (no Fisher weighting), uniform bits. ``smoothquant``:
#: per-channel smoothing (calib/smoothing.py), round-to-nearest weights, no rotation, uniform bits.
#: ``svdquant``: smoothing plus a rank-32 16-bit branch (calib/lowrank.py), the residual round-to-nearest.
#: ``vidit-q``: ViDiT-Q's static-dynamic channel balancing as a static smoothing followed by the online
#: rotation (x·diag(s)⁻¹·R), round-to-nearest weights, uniform bits (its timestep-aware balancing and its
#: metric-decoupled mixed precision are not implemented). ``q-dit``: Q-DiT's per-layer group sizes
#: (calib/group_alloc.py; its activations are dynamic per token already, contract 1), GPTQ weights without
#: Fisher weighting, no rotation, uniform bits. ``ptq4dit``: PTQ4DiT's channel-wise salience balancing with
#: Spearman-ρ-guided salience over the steps (calib/smoothing.ssc_salience) as the smoothing, round-to-nearest
#: weights, no rotation, uniform bits. ``clq``: CLQ's orthogonal-based smoothing (calib/obs.py: channel swap ×
#: block Hadamard, online as x·G, in place of the op's rotation), cross-block calibration (each block's inputs
#: from the quantized blocks upstream) and its parameter search as a per-layer weight clip ratio
#: (round-to-nearest), uniform bits.
METHOD_PRESETS: dict[str, dict[str, object]] = {
    "adatsq": {},
    "rtn": {"weights": "rtn", "rotation": False, "uniform_bits": True},
    "quarot": {"weights": "gptq", "alpha": "uniform", "rotation": True, "uniform_bits": True},
    "smoothquant": {"weights": "rtn", "rotation": False, "uniform_bits": True, "smoothing": True},
    "svdquant": {"weights": "rtn", "rotation": False, "uniform_bits": True, "smoothing": True, "lowrank": 32},
    "vidit-q": {"weights": "rtn", "rotation": True, "uniform_bits": True, "smoothing": True},
    "q-dit": {
        "weights": "gptq",
        "alpha": "uniform",
        "rotation": False,
        "uniform_bits": True,
        "group_alloc": True,
    },
    "ptq4dit": {
        "weights": "rtn",
        "rotation": False,
        "uniform_bits": True,
        "smoothing": True,
        "smooth_alpha": 0.5,
        "salience": "ssc",
    },
    "clq": {
        "weights": "rtn",
        "rotation": False,
        "uniform_bits": True,
        "obs": True,
        "cbc": True,
        "clip_search": True,
    },
}
METHODS = tuple(METHOD_PRESETS)
#: ``--salience``: the activation salience max|X_j| the smoothing scales use: ``max`` over every calibration
#: token (SmoothQuant), or ``ssc``: PTQ4DiT's Σ_t η_t·max|X_j^(t)| with η = softmax_t(−ρ_t), ρ_t the Spearman
#: correlation of step t's activation salience with the weight salience max|W_:,j|
SALIENCES = ("max", "ssc")


@dataclasses.dataclass(frozen=True)
class CompileConfig(JsonConfig):
    model: str
    target: float
    out: str
    steps: int | None = None
    resolution: tuple[int, ...] | None = None
    calib_samples: int = 4
    heldout_samples: int = 4
    candidates: int = 8
    clusters: int = 4
    tau: float = 1.0
    weight_bits: int | None = None
    group_size: int | None = None
    seed: int = 0
    max_engines: int | None = None
    model_path: str | None = None
    prompts: tuple[str, ...] | None = None
    metric: str = "latent"
    until: str = "package"
    hessian_memory_gb: float | None = None
    search_samples: int | None = None
    device: str = "auto"
    random_weights: bool = False
    weights: str = "gptq"
    alpha: str = "fisher"
    weight_scale: str = "absmax"
    #: the weight scales' granularity along K (plugins/reference.WEIGHT_GRANULARITIES: per group of G, per
    #: output channel, or per channel × 2^e per group; the last two allow a one-FMA FP8 promotion, issue 13)
    weight_group: str = "group"
    #: False: no Hadamard rotation anywhere (x·Wᵀ quantized as is), an ablation
    rotation: bool = True
    #: one configuration for every step (the best static schedule the search finds), an ablation
    static_schedule: bool = False
    #: every activation-quantized layer at every step at one width: the largest of 3, 4, 8 within the target
    uniform_bits: bool = False
    #: SmoothQuant's smoothing of the activation-quantized layers (calib/smoothing.py), with its α
    smoothing: bool = False
    smooth_alpha: float = 0.5
    #: SVDQuant's low-rank branch: its rank r (0: none); the activation-quantized layers keep L_up·L_downᵀ
    #: in 16 bits and quantize the residual
    lowrank: int = 0
    #: the activation salience of the smoothing scales (:data:`SALIENCES`)
    salience: str = "max"
    #: Q-DiT's group-size allocation: each layer's G from ``group_candidates`` (× the model's G), chosen for
    #: the least calibration output error under the weight-scale bytes of the model's G everywhere
    group_alloc: bool = False
    #: the candidate group sizes of ``group_alloc``, as multiples of the model's G (0.5 → G/2)
    group_candidates: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    #: D²Quant's dual-scale quantizer on the down-projection-like layers (calib/d2quant.py)
    dsq: bool = False
    #: D²Quant's deviation-aware mean-shift correction of the quantized layers' biases (calib/d2quant.py)
    dac: bool = False
    #: CLQ's orthogonal-based smoothing x·G, G = P·diag(R_b, …) (calib/obs.py), with ``obs_blocks`` blocks
    obs: bool = False
    obs_blocks: int = 2
    #: cross-block calibration: each transformer block's Hessians and statistics from the input that the
    #: already-quantized blocks upstream produce (the quantize stage replays once per block)
    cbc: bool = False
    #: CLQ's parameter search as a weight clip ratio per layer (calib/obs.CLIP_RATIOS), round-to-nearest
    clip_search: bool = False
    #: the method the options make up (:data:`METHOD_PRESETS`); ``CompileConfig.for_method`` fills them in
    method: str = "adatsq"

    def __post_init__(self) -> None:
        checks = [
            (self.calib_samples >= 1, "--calib-samples must be ≥ 1"),
            (self.heldout_samples >= 1, "held-out samples must be ≥ 1"),
            (self.candidates >= 1, "--candidates must be ≥ 1"),
            (self.clusters >= 1, "--clusters must be ≥ 1"),
            (self.tau > 0, "--tau must be > 0"),
            (self.weight_bits is None or self.weight_bits in WEIGHT_BITS, "--weight-bits must be 3 or 4"),
            (self.group_size is None or self.group_size >= 1, "--group-size must be ≥ 1"),
            (self.max_engines is None or self.max_engines >= 1, "--max-engines must be ≥ 1"),
            (self.steps is None or self.steps >= 1, "--steps must be ≥ 1"),
            (self.search_samples is None or self.search_samples >= 1, "--search-samples must be ≥ 1"),
            (
                self.hessian_memory_gb is None or self.hessian_memory_gb > 0,
                "--hessian-memory must be > 0 (GB)",
            ),
            (self.metric in METRICS, f"--metric must be one of {METRICS}"),
            (self.method in METHODS, f"--method must be one of {METHODS}"),
            (0.0 <= self.smooth_alpha <= 1.0, "--smooth-alpha must be in [0, 1]"),
            (self.lowrank >= 0, "--lowrank must be ≥ 0 (0: no low-rank branch)"),
            (self.salience in SALIENCES, f"--salience must be one of {SALIENCES}"),
            (
                self.salience == "max" or self.smoothing,
                "--salience ssc weights the smoothing scales' salience; it needs --smoothing",
            ),
            (
                not (self.dsq and self.lowrank),
                "--dsq rescales the input channels the --lowrank branch reads; use one of them",
            ),
            (
                len(self.group_candidates) >= 1 and all(c > 0 for c in self.group_candidates),
                "--group-candidates must be positive multiples of the group size",
            ),
            (self.weights in WEIGHT_METHODS, f"--weights must be one of {WEIGHT_METHODS}"),
            (self.obs_blocks >= 1, "--obs-blocks must be ≥ 1"),
            (
                not (self.obs and self.rotation),
                "--obs is CLQ's rotation (x·G before the op); add --no-rotation",
            ),
            (
                not (self.obs and (self.lowrank or self.dsq or self.dac)),
                "--obs rotates the input channels that --lowrank/--dsq/--dac work on; use one of them",
            ),
            (
                not (self.clip_search and self.weights != "rtn"),
                "--clip-search picks round-to-nearest weight scales; it needs --weights rtn",
            ),
            (
                not (self.uniform_bits and self.static_schedule),
                "--uniform-bits is one configuration already; drop --static-schedule",
            ),
            (self.alpha in ALPHAS, f"--alpha must be one of {ALPHAS}"),
            (self.weight_scale in WEIGHT_SCALES, f"--weight-scale must be one of {WEIGHT_SCALES}"),
            (
                self.weight_group in WEIGHT_GRANULARITIES,
                f"--weight-group must be one of {WEIGHT_GRANULARITIES}",
            ),
            (
                self.weight_group == "group"
                or not (self.group_alloc or self.dsq or self.obs or self.clip_search),
                f"--weight-group {self.weight_group} fixes the weight scales' granularity; --group-alloc, --dsq, "
                "--obs and --clip-search choose per-group scales: use one of them",
            ),
            (
                not (self.static_schedule and self.max_engines not in (None, 1)),
                "--static-schedule uses one configuration for every step; drop --max-engines",
            ),
            (
                not (self.weights == "rtn" and self.alpha != "fisher"),
                "--alpha weights GPTQ's Hessians; --weights rtn uses none, so drop --alpha",
            ),
            (self.until in STAGE_NAMES, f"--until must be one of {STAGE_NAMES}"),
            (
                re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
                f"--device {self.device!r} is not one of auto, cpu, cuda, cuda:N",
            ),
            (
                not (self.random_weights and self.model_path),
                "--random-weights builds the architecture with random weights; it takes no --model-path",
            ),
            (
                not (self.random_weights and self.prompts),
                "--random-weights uses synthetic conditioning (no checkpoint, no text encoders); drop --prompts",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise CompileError(msg)
        for key, value in METHOD_PRESETS.get(self.method, {}).items():
            if getattr(self, key) != value:
                raise CompileError(
                    f"--method {self.method} sets {key} = {value!r}, but it is {getattr(self, key)!r}: drop that "
                    f"option (CompileConfig.for_method fills the preset in)"
                )
        if not 3.0 <= self.target <= 16.0:
            raise CompileError(
                f"--target {self.target} is outside [3, 16]: the average activation bits cannot go below the "
                f"smallest width (3) nor above 16 (unquantized)"
            )

    @classmethod
    def for_method(cls, method: str, **fields: object) -> CompileConfig:
        """A config of ``method``: its preset (:data:`METHOD_PRESETS`) under ``fields``; a field that
        contradicts the preset is an error naming both."""
        if method not in METHOD_PRESETS:
            raise CompileError(f"--method {method!r} is not one of {METHODS}")
        preset = METHOD_PRESETS[method]
        for key, value in preset.items():
            if key in fields and fields[key] != value:
                raise CompileError(
                    f"--method {method} sets {key} = {value!r}; drop the {key} = {fields[key]!r} given"
                )
        return cls(**{**fields, **preset, "method": method})  # type: ignore[arg-type]

    # --- resolved values --------------------------------------------------------------------------------------
    def resolved_steps(self, spec: ModelSpec) -> int:
        return self.steps or spec.steps

    def resolved_resolution(self, spec: ModelSpec) -> tuple[int, ...]:
        res = tuple(self.resolution) if self.resolution else spec.resolution
        if len(res) != len(spec.resolution):
            want = "FRAMES HEIGHT WIDTH" if len(spec.resolution) == 3 else "HEIGHT WIDTH"
            raise CompileError(f"--resolution {res} does not fit {spec.name}; give {want}")
        return res

    def resolved_weight_bits(self) -> int:
        if self.weight_bits is not None:
            return self.weight_bits
        return 3 if self.target < 4 else 4

    def resolved_device(self, spec: ModelSpec | None = None) -> str:
        """``auto``: the GPU when one is present, except for the tiny models (their reference numerics are
        float32 on the CPU, and the GPU kernels do not take their widths), else the CPU."""
        if self.device != "auto":
            return self.device
        if spec is not None and spec.is_tiny:
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_search_samples(self) -> int:
        """Calibration samples the search's candidate costs use (the first ones); all by default."""
        return min(self.search_samples or self.calib_samples, self.calib_samples)

    def resolved_hessian_memory_gb(
        self, device_type: str, free_gb: float | None = None, reserve_gb: float = GPTQ_RESERVE_GB
    ) -> float:
        """The Hessian accumulators' budget per replay of the trajectories: 8 GB of float64 on the CPU,
        40 GB of float32 on the GPU (Flux-dev's 75 GB of float32 Hessians in two replays; with the 24 GB of
        bf16 weights the peak stays under 80 GB). ``free_gb``: the GPU memory the stage can still use; the
        GPU budget is then at most that less ``reserve_gb`` (what GPTQ of the widest layer needs beside the
        accumulators, at least ``GPTQ_RESERVE_GB``), so a smaller card takes more replays instead of running
        out of memory."""
        if self.hessian_memory_gb is not None:
            return self.hessian_memory_gb
        if device_type != "cuda":
            return 8.0
        if free_gb is None:
            return 40.0
        budget = min(40.0, free_gb - reserve_gb)
        if budget < 1.0:
            raise CompileError(
                f"the GPU has {free_gb:.1f} GB free beside the model, too little for the Hessians and GPTQ "
                f"(it needs {reserve_gb + 1:.0f} GB or more): free the GPU, set --hessian-memory, or "
                "compile with --device cpu"
            )
        return budget

    def resolved_group_size(self, spec: ModelSpec) -> int:
        return self.group_size or spec.group_size


def default_of(name: str) -> object:
    """The default of the :class:`CompileConfig` field ``name`` (the CLI's defaults come from here)."""
    for f in dataclasses.fields(CompileConfig):
        if f.name == name:
            if f.default is dataclasses.MISSING:
                raise KeyError(f"CompileConfig.{name} has no default")
            return f.default
    raise KeyError(f"CompileConfig has no field {name!r}")
