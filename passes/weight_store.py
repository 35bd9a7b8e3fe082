"""``weights.safetensors``: the one copy of packed weights, scales, biases and every unquantized parameter.

Quantized linear ``name`` stores ``name.w_packed`` (its format's bytes, plugins/formats.py), ``name.w_scale``
(float16, N×K/G) and ``name.bias`` (a layer with several rotation blocks: ``w_packed``/``w_scale`` hold block
0, ``w_packed_1``/``w_scale_1``... the others); every other state-dict entry keeps its own name. The header metadata
``adatsq.layers`` (JSON) records per quantized layer: in/out features, weight bits, group, rotation,
activation-quantized. ONNX graphs point their initializers into this file (external data offsets), so N
engine configurations never mean N copies of the weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from adatsq.core.atomic import atomic_write
from adatsq.passes.base import Pass, PassConditionError, PassResult
from adatsq.passes.quant_linear import QUANT_TENSOR, QuantLinear, block_buffer, quant_linears

__all__ = [
    "LoadQuantizedWeightsPass",
    "layer_records",
    "load_weight_store",
    "meta_tensors",
    "save_weight_store",
]


def layer_records(model: nn.Module) -> dict[str, dict[str, Any]]:
    return {
        n: {
            "in_features": m.in_features,
            "out_features": m.out_features,
            "w_bits": m.w_bits,
            "group_size": m.group_size,
            "rotate": m.rotate_input,
            "act_quantized": m.act_quantized,
            "bias": m.bias is not None,
            "blocks": list(m.blocks),
            "smooth": m.smooth_inv is not None,
            "obs_perm": m.obs_perm is not None,
            "rank": 0 if m.lowrank_down is None else int(m.lowrank_down.shape[1]),
        }
        for n, m in quant_linears(model).items()
    }


def save_weight_store(path: Path, model: nn.Module, extra_metadata: Mapping[str, str] | None = None) -> None:
    """Write the quantized model's state (QuantLinear buffers + everything else) atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        tensors[name] = t.detach().cpu().contiguous()
    metadata = {"adatsq.layers": json.dumps(layer_records(model), sort_keys=True), "format": "pt"}
    metadata.update(extra_metadata or {})
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def load_weight_store(
    path: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    layers = json.loads(meta.get("adatsq.layers", "{}"))
    return tensors, layers, meta


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` still on the meta device (never materialised)."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [n for n, t in named if t is not None and t.is_meta]


class LoadQuantizedWeightsPass(Pass[nn.Module]):
    """Turn a float model (same architecture) into the stored quantized model: QuantLinear where the store
    says so, stored values everywhere else (in place).

    The QuantLinear modules hold the stored packed bytes as they are (no unpack/repack). ``assign=True``
    makes every other module take the file's tensors themselves (``load_state_dict(assign=True)``: no copy,
    the file's dtype), which is what a model built under ``accelerate.init_empty_weights(include_buffers=False)`` needs; the pass then
    checks that nothing is left on the meta device. ``assign=False`` copies into the existing tensors."""

    def __init__(
        self, path: Path, assign: bool = False, tensors: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        """``tensors``: the values to use instead of the file's (the layer records still come from the file),
        e.g. device buffers already loaded; every tensor the file holds must be among them."""
        self.tensors, self.layers, self.metadata = load_weight_store(path)
        if tensors is not None:
            left = sorted(set(self.tensors) - set(tensors))
            if left:
                raise PassConditionError(f"no tensor given for the weight-store entries {left[:3]}")
            self.tensors = dict(tensors)
        self.assign = assign

    def requires(self, target: nn.Module) -> None:
        modules = dict(target.named_modules())
        missing = [n for n in self.layers if not isinstance(modules.get(n), (nn.Linear, QuantLinear))]
        if missing:
            raise PassConditionError(f"weight store names layers the model lacks: {missing[:3]}")

    def call(self, target: nn.Module) -> PassResult[nn.Module]:
        from adatsq.passes.quant_linear import set_submodule

        for name, rec in self.layers.items():
            if rec.get("obs"):
                raise PassConditionError(
                    f"{name}: the store holds CLQ's G as a dense K×K matrix (an older adatsq); "
                    "compile it again (--method clq) to get the permutation form this version loads"
                )
            bias = self.tensors.get(f"{name}.bias") if rec["bias"] else None
            blocks = rec.get("blocks") or [rec["in_features"]]  # stores written before rotation blocks: one
            more = [
                (
                    self.tensors[f"{name}.{block_buffer('w_packed', i)}"],
                    self.tensors[f"{name}.{block_buffer('w_scale', i)}"],
                )
                for i in range(1, len(blocks))
            ]
            q = QuantLinear.from_packed(
                self.tensors[f"{name}.w_packed"],
                self.tensors[f"{name}.w_scale"],
                bias,
                rec["w_bits"],
                rec["group_size"],
                rec["rotate"],
                rec["in_features"],
                act_quantized=rec["act_quantized"],
                blocks=blocks,
                more=more,
                smooth_inv=self.tensors[f"{name}.smooth_inv"] if rec.get("smooth") else None,
                obs_perm=self.tensors[f"{name}.obs_perm"] if rec.get("obs_perm") else None,
                lowrank=(self.tensors[f"{name}.lowrank_down"], self.tensors[f"{name}.lowrank_up"])
                if rec.get("rank")
                else None,
            )
            if q.out_features != rec["out_features"]:
                raise PassConditionError(
                    f"{name}: {q.out_features} stored output features, the store records {rec['out_features']}"
                )
            set_submodule(target, name, q)
        missing, unexpected = target.load_state_dict(self.tensors, strict=False, assign=self.assign)
        if unexpected:
            raise PassConditionError(f"weight store holds tensors the model lacks: {unexpected[:3]}")
        real_missing = [
            m
            for m in missing
            if not (
                QUANT_TENSOR.fullmatch(m)
                or re.search(r"\.(bias|smooth_inv|obs_perm|lowrank_down|lowrank_up)$", m)
            )
        ]
        if real_missing:
            raise PassConditionError(f"weight store lacks model tensors: {real_missing[:3]}")
        return PassResult(target, modified=True)

    def ensures(self, result: nn.Module) -> None:
        left = meta_tensors(result)
        if left:
            raise PassConditionError(f"not in the weight store and never materialised: {left[:3]}")
