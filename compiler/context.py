"""State shared by the stages of one compile: the config, the output directory, and lazily loaded
inputs (the model, its layer inventory, the calibration data, the schedule)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from adatsq.calib.calibrate import CalibrationData
from adatsq.compiler.output_dir import OutputDir
from adatsq.compiler.settings import CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.models.base import Family, LayerInventory, ModelSpec
from adatsq.core.models.registry import family_of, get_spec, load_transformer
from adatsq.core.schedule import Schedule, load_schedule
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant

__all__ = ["CompileContext", "model_fingerprint"]


def model_fingerprint(model: nn.Module) -> str:
    """A stable digest of the weights: names, shapes, dtypes and a strided sample of every tensor's values."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{float(flat.float().sum())}".encode())
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
        if config.metric == "clip" and self.spec.is_tiny:
            raise CompileError(
                f"--metric clip needs a real model with a VAE and prompts; {self.spec.name} has none"
            )
        self.steps = config.resolved_steps(self.spec)
        self.resolution = config.resolved_resolution(self.spec)
        self.weight_bits = config.resolved_weight_bits()
        self.group_size = config.resolved_group_size(self.spec)
        self.timings: dict[str, float] = {}
        self.quantized_model: nn.Module | None = None

    # --- inputs -------------------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = load_transformer(self.spec, self.config.model_path, seed=self.config.seed)
        return self._model

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def inventory(self) -> LayerInventory:
        return self.family.inventory(self.model)

    @property
    def calibration(self) -> CalibrationData:
        if self._calibration is None:
            state = torch.load(self.out.cache / "calibration.pt", weights_only=False)
            self._calibration = CalibrationData.from_state_dict(state)
        return self._calibration

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
        self, codes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> dict[str, LayerQuant]:
        inv = self.inventory
        out: dict[str, LayerQuant] = {}
        for name in inv.quantized_layers:
            c, s = codes[name] if codes else (None, None)
            out[name] = LayerQuant(self.weight_bits, name in set(inv.act_layers), self.group_size, c, s)
        return out

    def quantized_copy(self, codes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> nn.Module:
        """A copy of the model with QuantLinear layers (round-to-nearest weights unless ``codes`` given)."""
        qmodel = copy.deepcopy(self.model)
        InsertQuantLinearPass(self.layer_quant(codes))(qmodel)
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
