"""What the compiler knows about a DiT family: how to build it, how its pipeline calls it per step, which
linears are quantized and how.

A :class:`Family` turns a diffusers transformer + scheduler into one uniform step function,
``velocity(transformer, latents, t, cond) -> v``, where ``v`` is exactly what the family's diffusers pipeline
hands to ``scheduler.step`` (after classifier-free guidance and any sign flip). Calibration, search, the
Fisher loss and the runner all work in that convention, so they are written once for all families.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from adatsq.core.errors import CompileError

__all__ = [
    "Conditioning",
    "Family",
    "LayerInventory",
    "LayerRule",
    "LayerRuleError",
    "ModelSpec",
    "Role",
    "Trajectory",
    "Unit",
    "placement",
    "run_sampler",
    "sample_paths",
]


class Role(str, enum.Enum):
    """What the compiler does with one nn.Linear. String-valued, so it reads (and serialises) as its value."""

    ACT = "act"  # weights and activations quantized (rotated; in the activation-bit schedule)
    WEIGHT_ONLY = "weight_only"  # weights quantized, activations not (adaLN modulation, embedders: GEMVs)
    KEEP = "keep"  # deliberately kept in full precision, untouched

    def __str__(self) -> str:
        return self.value


class LayerRuleError(CompileError):
    """The family's layer rules do not describe the model: a linear no rule (or more than one rule) matches."""


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """Linears whose qualified name matches ``pattern`` (``re.fullmatch``) get ``role``; ``unit`` (a ``re.sub``
    template, activation-quantized rules only) names the group of linears that read the same input tensor and
    so share one rotation and one quantizer."""

    pattern: str
    role: Role
    unit: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise TypeError(
                f"LayerRule({self.pattern!r}): role must be a Role ({', '.join(f'Role.{r.name}' for r in Role)}), "
                f"got {self.role!r}"
            )
        if self.unit is not None and self.role is not Role.ACT:
            raise ValueError(f"LayerRule({self.pattern!r}): only Role.ACT rules group linears into units")
        re.compile(self.pattern)  # a bad pattern fails where the rule is written


@dataclasses.dataclass(frozen=True)
class Unit:
    """Activation-quantized linears that share one input (q/k/v; Flux single-block q/k/v + proj_mlp)."""

    name: str
    members: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LayerInventory:
    """Every nn.Linear of a transformer, by role, in module order."""

    units: tuple[Unit, ...]
    weight_only: tuple[str, ...]
    kept: tuple[str, ...]

    @property
    def act_layers(self) -> tuple[str, ...]:
        return tuple(m for u in self.units for m in u.members)

    @property
    def quantized_layers(self) -> tuple[str, ...]:
        return self.act_layers + self.weight_only

    @property
    def skipped(self) -> tuple[str, ...]:
        """Former name of :attr:`kept`."""
        return self.kept

    def counts(self) -> dict[Role, int]:
        return {
            Role.ACT: len(self.act_layers),
            Role.WEIGHT_ONLY: len(self.weight_only),
            Role.KEEP: len(self.kept),
        }

    def unit_sizes(self) -> list[int]:
        return [len(u.members) for u in self.units]

    def unit_of(self) -> dict[str, int]:
        return {m: i for i, u in enumerate(self.units) for m in u.members}

    @staticmethod
    def from_rules(
        model: nn.Module, rules: Sequence[LayerRule], family: str = "", source: str = ""
    ) -> LayerInventory:
        """The roles of every nn.Linear of ``model``. Each linear must match exactly one rule: a linear no rule
        matches (diffusers renamed a layer, a checkpoint of another variant) or that two rules claim raises
        :class:`LayerRuleError` naming it, so a compile never quietly leaves a layer out."""
        compiled = [(re.compile(r.pattern), r) for r in rules]
        units: dict[str, list[str]] = {}
        weight_only: list[str] = []
        kept: list[str] = []
        unmatched: list[str] = []
        ambiguous: list[str] = []
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            matches = [r for rx, r in compiled if rx.fullmatch(name)]
            if len(matches) != 1:
                if matches:
                    ambiguous.append(f"{name} ({' and '.join(repr(r.pattern) for r in matches)})")
                else:
                    unmatched.append(name)
                continue
            rule = matches[0]
            if rule.role is Role.KEEP:
                kept.append(name)
            elif rule.role is Role.WEIGHT_ONLY:
                weight_only.append(name)
            else:
                key = re.sub(rule.pattern, rule.unit, name) if rule.unit else name
                units.setdefault(key, []).append(name)
        where = (
            (f"the {family} family's" if family else "the")
            + " layer rules"
            + (f" ({source})" if source else "")
        )
        what = type(model).__name__
        if unmatched:
            raise LayerRuleError(
                f"{len(unmatched)} nn.Linear of {what} match no rule of {where}: {_listing(unmatched)}; "
                f"add a LayerRule for each (Role.KEEP to keep it in full precision)"
            )
        if ambiguous:
            raise LayerRuleError(
                f"{len(ambiguous)} nn.Linear of {what} match more than one rule of {where}: "
                f"{_listing(ambiguous)}; make the patterns disjoint"
            )
        return LayerInventory(
            units=tuple(Unit(k, tuple(v)) for k, v in units.items()),
            weight_only=tuple(weight_only),
            kept=tuple(kept),
        )


def _listing(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclasses.dataclass
class Conditioning:
    """Per-sample conditioning tensors of one family (text embeddings, pooled vectors, negatives...)."""

    tensors: dict[str, torch.Tensor]

    def select(self, index: torch.Tensor | slice) -> Conditioning:
        return Conditioning({k: v[index] for k, v in self.tensors.items()})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        return Conditioning(
            {
                k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                for k, v in self.tensors.items()
            }
        )

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry: a named model, its diffusers classes and its sampling defaults.

    ``transformer_config`` set means a tiny model built from that config with random weights (seeded);
    otherwise the transformer loads from ``hf_id`` (subfolder ``transformer``) or a local ``--model-path``, and
    ``published_config`` is that checkpoint's ``transformer/config.json`` (kept in the registry, so the full-size
    architecture can be built without the Hub: on the meta device, or with random weights).
    """

    name: str
    family: str
    hf_id: str
    revision: str | None
    steps: int
    resolution: tuple[int, ...]
    guidance_scale: float
    scheduler_config: dict[str, Any]
    transformer_config: dict[str, Any] | None = None
    text_len: int = 512
    group_size: int = 128
    description: str = ""
    published_config: Mapping[str, Any] | None = None

    @property
    def is_tiny(self) -> bool:
        return self.transformer_config is not None

    @property
    def architecture_config(self) -> dict[str, Any]:
        """The transformer's constructor config: the tiny config, else the published one."""
        cfg = self.transformer_config if self.transformer_config is not None else self.published_config
        if cfg is None:
            raise ValueError(f"{self.name}: the registry holds no transformer config for this model")
        return dict(cfg)


class Family:
    """Calling convention of one diffusers DiT family (subclasses: flux, wan, zimage)."""

    name: str = ""
    transformer_class: str = ""
    pipeline_class: str = ""
    #: the pipeline's components that encode prompts (skipped when the embeddings are cached)
    text_components: tuple[str, ...] = ("text_encoder", "tokenizer")
    #: whether ``--metric geneval`` can score this family's samples (:meth:`decode_images` of a scene world)
    geneval: bool = False
    scheduler_class: str = "FlowMatchEulerDiscreteScheduler"
    rules: tuple[LayerRule, ...] = ()

    # --- building -------------------------------------------------------------------------------------------
    def transformer_cls(self) -> type[nn.Module]:
        import diffusers

        return getattr(diffusers, self.transformer_class)

    def build(
        self,
        config: Mapping[str, Any],
        device: torch.device | str = "cpu",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> nn.Module:
        """The family's transformer class built from ``config`` (a diffusers ``config.json``; keys starting with
        ``_`` are metadata) on ``device``, with seeded random weights; ``"meta"`` allocates nothing.

        Parameters are created in ``dtype`` directly (a 12 B model is never materialised in float32 first),
        except the modules the class keeps in float32 (``_keep_in_fp32_modules``, as ``from_pretrained``
        does: Wan's time embedder reads its parameter dtype)."""
        cls = self.transformer_cls()
        found = config.get("_class_name")
        if found is not None and found != cls.__name__:
            raise ValueError(f"config of a {found} given to the {self.name} family ({cls.__name__})")
        kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
        default = torch.get_default_dtype()
        with torch.random.fork_rng(), torch.device(device):
            torch.manual_seed(seed)
            torch.set_default_dtype(dtype)
            try:
                model = cls(**kwargs)
            finally:
                torch.set_default_dtype(default)
        keep = set(getattr(cls, "_keep_in_fp32_modules", None) or ())
        if dtype != torch.float32 and keep:  # names of modules or of parameters (Wan: scale_shift_table)
            for name, p in model.named_parameters():
                if keep & set(name.split(".")):
                    p.data = p.data.float()
        return model.eval()

    def build_tiny(self, spec: ModelSpec, seed: int = 0) -> nn.Module:
        assert spec.transformer_config is not None
        return self.build(spec.transformer_config, seed=seed)

    def make_scheduler(self, spec: ModelSpec) -> Any:
        import diffusers

        return getattr(diffusers, self.scheduler_class).from_config(spec.scheduler_config)

    def inventory(self, model: nn.Module) -> LayerInventory:
        return LayerInventory.from_rules(model, self.rules, family=self.name, source=type(self).__module__)

    # --- sampling -------------------------------------------------------------------------------------------
    def latent_shape(self, spec: ModelSpec, model: nn.Module, resolution: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def synthetic_conditioning(
        self, spec: ModelSpec, model: nn.Module, n: int, generator: torch.Generator
    ) -> Conditioning:
        raise NotImplementedError

    def load_text_encoders(self, source: str, revision: str | None, dtype: torch.dtype) -> Any:
        """What :meth:`encode_prompts` takes as ``pipe``: the diffusers pipeline of ``source`` (a Hub id or a
        pipeline folder) with its text encoders and tokenizers only, no transformer and no VAE. A family
        whose checkpoints carry their own text encoder overrides this."""
        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        return cls.from_pretrained(source, transformer=None, vae=None, revision=revision, dtype=dtype)

    def encode_prompts(self, pipe: Any, prompts: Sequence[str], spec: ModelSpec) -> Conditioning:
        raise NotImplementedError

    def input_split(self, model: nn.Module, name: str) -> tuple[int, ...] | None:
        """The widths of the tensors linear ``name`` reads concatenated along its input (None: one tensor).
        Each part then gets its own rotation block (passes/quant_linear.rotation_blocks)."""
        return None

    def default_prompts(self, spec: ModelSpec) -> tuple[str, ...] | None:
        """Calibration prompts when ``--prompts`` gives none (None: the compiler's general-purpose list)."""
        return None

    def decode_images(self, latents: torch.Tensor) -> list[Any]:
        """Final latents → RGB images (uint8 H×W×3 numpy arrays), for families that decode without a VAE."""
        raise NotImplementedError(f"the {self.name} family decodes through its pipeline's VAE")

    def missing_checkpoint(self, spec: ModelSpec) -> str | None:
        """Why ``spec``'s own checkpoint cannot be loaded yet, and the command that makes it; None when it
        can (every Hub checkpoint: the Hub says why itself). A family trained here overrides this."""
        return None

    def set_timesteps(
        self, scheduler: Any, spec: ModelSpec, steps: int, latent_shape: tuple[int, ...]
    ) -> None:
        raise NotImplementedError

    def velocity(
        self, model: nn.Module, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning, spec: ModelSpec
    ) -> torch.Tensor:
        """Model output in the scheduler's convention for ``scheduler.step`` (CFG applied)."""
        raise NotImplementedError

    def scheduler_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """A stored (float64) timestep in the dtype the family's scheduler yields (Wan: int64)."""
        return t.float()

    def sample_noise(
        self,
        spec: ModelSpec,
        model: nn.Module,
        resolution: tuple[int, ...],
        n: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        shape = (n, *self.latent_shape(spec, model, resolution))
        return torch.randn(shape, generator=generator, dtype=torch.float32)


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model runs and in which dtype: every input is moved there. The dtype is that of the first
    floating parameter outside the class's ``_keep_in_fp32_modules`` (Wan keeps its first parameters, the
    ``scale_shift_table``, in float32 next to bf16 weights), as diffusers' own ``ModelMixin.dtype``."""
    keep = set(getattr(type(model), "_keep_in_fp32_modules", None) or ())
    first = None
    for name, p in model.named_parameters():
        first = p if first is None else first
        if p.is_floating_point() and not keep & set(name.split(".")):
            return p.device, p.dtype
    if first is None:
        raise ValueError(f"{type(model).__name__} has no parameters to place its inputs by")
    return first.device, first.dtype


StepHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def dynamic_shift_mu(scheduler_config: Any, image_seq_len: int) -> float:
    """The pipelines' ``calculate_shift``: mu linear in the image token count between the config's
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    cfg = scheduler_config
    return calculate_shift(
        image_seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )


def timesteps_for(
    family: Family, spec: ModelSpec, steps: int, latent_shape: tuple[int, ...]
) -> tuple[Any, torch.Tensor]:
    scheduler = family.make_scheduler(spec)
    family.set_timesteps(scheduler, spec, steps, latent_shape)
    return scheduler, scheduler.timesteps.clone()


class Trajectory:
    """The family's sampling loop, one step at a time: ``latents ← scheduler.step(velocity(latents, t), t,
    latents)`` from ``noise``, its scheduler set to ``steps`` (multistep schedulers keep their history in it).
    :meth:`fork` copies the state (latents and scheduler), so two continuations of one prefix compute exactly
    what two loops from the start would."""

    def __init__(
        self,
        family: Family,
        spec: ModelSpec,
        model: nn.Module,
        noise: torch.Tensor,
        cond: Conditioning,
        steps: int,
    ) -> None:
        self.family, self.spec, self.model, self.cond = family, spec, model, cond
        self.scheduler, self.timesteps = timesteps_for(family, spec, steps, tuple(noise.shape[1:]))
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        self.latents = noise.to(placement(model)[0], torch.float32, copy=True)
        self.index = 0

    def step(self, on_step: StepHook | None = None, before_step: Callable[[int], None] | None = None) -> None:
        i, t = self.index, self.timesteps[self.index]
        if before_step is not None:
            before_step(i)
        v = self.family.velocity(self.model, self.latents, t, self.cond, self.spec)
        if on_step is not None:
            on_step(i, t, self.latents, v)
        self.latents = self.scheduler.step(v.float(), t, self.latents, return_dict=False)[0]
        self.index += 1

    def fork(self) -> Trajectory:
        other = copy.copy(self)
        other.scheduler = copy.deepcopy(self.scheduler)
        other.latents = self.latents.clone()
        return other


def run_sampler(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    noise: torch.Tensor,
    cond: Conditioning,
    steps: int,
    on_step: StepHook | None = None,
    before_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The family's real sampling loop (:class:`Trajectory` from start to end).

    ``before_step(i)`` runs before the model call of step ``i`` (the runner switches engines there);
    ``on_step(i, t, latents_in, velocity)`` sees what the model saw and returned.
    """
    trajectory = Trajectory(family, spec, model, noise, cond, steps)
    while trajectory.index < steps:
        trajectory.step(on_step, before_step)
    return trajectory.latents


def sample_paths(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    noise: torch.Tensor,
    cond: Conditioning,
    paths: Sequence[Sequence[Hashable]],
    set_step: Callable[[Hashable], None],
    on_final: Callable[[int, torch.Tensor], None],
) -> int:
    """``run_sampler`` once per path, a path being one configuration per step that ``set_step`` applies
    before that step's model call, with every prefix that several paths share sampled once: the paths form
    a trie walked depth first, and the trajectory is forked where they part. ``on_final(j, latents)`` gets
    path ``j``'s final latents (the same values as its own loop from the start; equal paths share one
    tensor, not to be modified). Returns the number of model steps taken (the trie's nodes)."""
    if not paths:
        return 0
    steps = len(paths[0])
    if steps < 1 or any(len(p) != steps for p in paths):
        raise ValueError(
            f"every path needs one configuration per step, got lengths {sorted({len(p) for p in paths})}"
        )
    taken = 0

    def walk(trajectory: Trajectory, members: list[int]) -> None:
        nonlocal taken
        while trajectory.index < steps:
            branches: dict[Hashable, list[int]] = {}
            for j in members:
                branches.setdefault(paths[j][trajectory.index], []).append(j)
            if len(branches) > 1:
                *first, last = branches.values()
                for group in first:
                    walk(trajectory.fork(), group)
                members = last
            set_step(paths[members[0]][trajectory.index])
            trajectory.step()
            taken += 1
        for j in members:
            on_final(j, trajectory.latents)

    walk(Trajectory(family, spec, model, noise, cond, steps), list(range(len(paths))))
    return taken


def iter_linears(model: nn.Module, names: Sequence[str]) -> Iterator[tuple[str, nn.Module]]:
    modules = dict(model.named_modules())
    for n in names:
        yield n, modules[n]
