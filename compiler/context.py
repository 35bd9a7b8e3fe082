"""State shared by the stages of one compile: the config, the output directory, and lazily loaded
inputs (the model, its layer inventory, the calibration data, the schedule)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from adatsq.calib.calibrate import CalibrationData
from adatsq.compiler.output_dir import OutputDir
from adatsq.compiler.settings import CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.models.base import Family, LayerInventory, ModelSpec
from adatsq.core.models.registry import build_architecture, family_of, get_spec, load_transformer
from adatsq.core.schedule import Schedule, load_schedule
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant

if TYPE_CHECKING:
    from adatsq.compiler.prompts import PromptEmbeddings

__all__ = ["CompileContext", "model_fingerprint"]


def model_fingerprint(model: nn.Module) -> str:
    """A stable digest of the weights: names, shapes, dtypes, a strided sample of every tensor's values and
    the integer sum of all its bytes. Every part is exact, so the digest does not depend on the thread count
    or the summation order (a float sum would: then caches went stale between runs with other settings)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().contiguous().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().contiguous()
        byte_sum = int(flat.view(torch.uint8).sum(dtype=torch.int64)) if flat.numel() else 0
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{byte_sum}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


class CompileContext:
    def __init__(
        self, config: CompileConfig, model: nn.Module | None = None, console: Console | None = None
    ) -> None:
        self.config = config
        self.spec: ModelSpec = get_spec(config.model)
        self.family: Family = family_of(self.spec)
        self.out = OutputDir(config.out)
        self.console = console or Console(stderr=True)
        self._model = model
        self._fingerprint: str | None = None
        self._calibration: CalibrationData | None = None
        self._schedule: Schedule | None = None
        if config.metric == "geneval" and not self.family.geneval:
            raise CompileError(
                f"--metric geneval scores rendered-shape scenes; {self.spec.name} does not draw them (it works for "
                f"shapes-flux; use --metric latent)"
            )
        if config.metric == "clip" and self.spec.is_tiny:
            raise CompileError(
                f"--metric clip needs a real model with a VAE and prompts; {self.spec.name} has none"
            )
        self.steps = config.resolved_steps(self.spec)
        self.resolution = config.resolved_resolution(self.spec)
        self.weight_bits = config.resolved_weight_bits()
        self.group_size = config.resolved_group_size(self.spec)
        if config.random_weights and self.spec.is_tiny:
            raise CompileError(f"{self.spec.name} has random weights already; drop --random-weights")
        self.device = torch.device(config.resolved_device(self.spec))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise CompileError(f"--device {config.device}: no CUDA GPU is visible here; use --device cpu")
        #: the model's dtype: bf16 on the GPU, float32 on the CPU (the tiny models' reference numerics)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.timings: dict[str, float] = {}
        self._inventory: LayerInventory | None = None
        #: the real prompts' embeddings (compiler/prompts.py), encoded before the transformer is loaded
        self.prompt_embeddings: PromptEmbeddings | None = None
        self.prompt_embeddings_unsaved = False

    # --- inputs -------------------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        if self._model is None:
            if self.config.random_weights:
                self._model = build_architecture(
                    self.spec, device=self.device, seed=self.config.seed, dtype=self.dtype
                )
            else:
                model = load_transformer(
                    self.spec, self.config.model_path, dtype=self.dtype, seed=self.config.seed
                )
                self._model = model.to(self.device)
        return self._model

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def inventory(self) -> LayerInventory:
        if self._inventory is None:
            self._inventory = self.family.inventory(self.model)
        return self._inventory

    def read_cache(self, name: str, parse: Callable[[Any], Any] | None = None) -> Any | None:
        """``cache/<name>``, or None when absent or unreadable (then with one warning line naming it)."""
        return self.out.read_cache(name, self.warn, parse)

    def cached_calibration(self) -> CalibrationData | None:
        """The calibration, from ``cache/calibration.pt`` unless already in memory; None if unreadable."""
        if self._calibration is None:
            self._calibration = self.read_cache("calibration.pt", CalibrationData.from_state_dict)
        return self._calibration

    @property
    def calibration(self) -> CalibrationData:
        data = self.cached_calibration()
        if data is None:  # the pipeline re-runs the calibrate stage when its cache cannot be read
            raise RuntimeError(f"{self.out.cache / 'calibration.pt'} is missing or unreadable")
        return data

    @calibration.setter
    def calibration(self, data: CalibrationData) -> None:
        self._calibration = data

    @property
    def schedule(self) -> Schedule:
        if self._schedule is None:
            self._schedule = load_schedule(self.out.schedule)
        return self._schedule

    @schedule.setter
    def schedule(self, value: Schedule) -> None:
        self._schedule = value

    def latent_shape(self) -> tuple[int, ...]:
        return self.family.latent_shape(self.spec, self.model, self.resolution)

    def layer_quant(
        self,
        codes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        smooth: dict[str, torch.Tensor] | None = None,
        lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        groups: dict[str, int] | None = None,
        biases: dict[str, torch.Tensor] | None = None,
        obs: dict[str, tuple[torch.Tensor, tuple[int, ...]]] | None = None,
    ) -> dict[str, LayerQuant]:
        """How each quantized layer is quantized (``groups``: Q-DiT's G of the layers that do not use the
        model's; ``biases``: DAC's corrected biases; ``obs``: CLQ's G = P·diag(R_b, …) as (perm, blocks) of the
        layers whose codes are of W·diag(s)·G; the rest as :meth:`quantized_copy`)."""
        inv = self.inventory
        out: dict[str, LayerQuant] = {}
        act = set(inv.act_layers)
        for name in inv.quantized_layers:
            c, s = codes[name] if codes else (None, None)
            perm, obs_blocks = (obs or {}).get(name, (None, None))
            out[name] = LayerQuant(
                self.weight_bits,
                name in act,
                (groups or {}).get(name, self.group_size),
                c,
                s,
                rotation=self.config.rotation,
                scale_method=self.config.weight_scale,
                split=self.family.input_split(self.model, name),
                smooth=(smooth or {}).get(name),
                lowrank=(lowrank or {}).get(name),
                bias=(biases or {}).get(name),
                obs_perm=perm,
                obs_blocks=obs_blocks,
                weight_group=self.config.weight_group,
            )
        return out

    def copy_for_quantized_layers(self) -> nn.Module:
        """A copy of the model in which the quantized linears are the model's own modules (deepcopy's memo),
        not copies, for a pass that swaps them out of the copy (InsertQuantLinearPass, the weight-store
        pass): the copy then costs the kept layers plus what replaces the linears (Flux-dev: 5.3 GB of packed
        weights next to the model's 23.8 GB, instead of a second 23.8 GB)."""
        modules = dict(self.model.named_modules())
        memo: dict[int, Any] = {id(modules[n]): modules[n] for n in self.inventory.quantized_layers}
        return copy.deepcopy(self.model, memo)

    def quantized_copy(
        self,
        codes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        smooth: dict[str, torch.Tensor] | None = None,
        lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        groups: dict[str, int] | None = None,
        biases: dict[str, torch.Tensor] | None = None,
        obs: dict[str, tuple[torch.Tensor, tuple[int, ...]]] | None = None,
    ) -> nn.Module:
        """A copy of the model with QuantLinear layers (round-to-nearest weights unless ``codes`` given;
        ``smooth``: SmoothQuant's s of the layers whose codes are of W·diag(s); ``lowrank``: SVDQuant's
        branch of the layers whose codes are of the residual); the model keeps its nn.Linear layers."""
        qmodel = self.copy_for_quantized_layers()
        InsertQuantLinearPass(self.layer_quant(codes, smooth, lowrank, groups, biases, obs))(qmodel)
        return qmodel

    # --- progress -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def log(self, msg: Any) -> None:
        self.console.print(msg)

    def warn(self, msg: str) -> None:
        """One line (never wrapped), the message taken literally (no rich markup)."""
        self.console.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)
