"""Stage 5, export: ONE dynamo export of the quantized transformer, specialised per distinct configuration.

    weights.safetensors + transformer_config.json ─► QuantLinear model (LoadQuantizedWeightsPass)
      ─► family wrapper with tensor inputs (export/graph_io.py)
      ─► torch.onnx.export(dynamo=True, opset 21, QLinear translation, dynamic batch and token dims)
      ─► on the onnx-ir model: shared Hadamard initializers, every parameter pointed into the weight file
         (external data), so no protobuf ever holds the weights (> 2 GB cannot be serialised at all)
      ─► finalize_exported_model (Hadamard values checked, QLinear function, ir_version 10)
      ─► per configuration k of schedule.json:
           SetActivationBitsPass(configs[k]) → WeightOnlyDequantPass → ExternalizeWeightsPass → CleanupPass
           → onnx/config_kk.onnx
      ─► per configuration: the TensorRT twin onnx/config_kk.trt.onnx (export/trt_graph.py: weights as graph
         inputs, constants folded, sequence ops as Slice), checked against the parser tables
         (export/trt_check.py); a violation fails the export
      ─► onnx/io.json (graph I/O per family, how the runner builds the inputs, the TensorRT profile ranges,
         the weight inputs and the twin graphs)

All configuration graphs read their parameters from ``onnx/weights.safetensors``, the one weight file
(``weights.safetensors`` at the root is a symlink to it, see :func:`place_weights`), so N configurations
cost N small graphs and ONE copy of the weights. The example batch is 2 (a batch of 1 would be specialised
away by torch.export); the exporter runs without its optimizer (``optimize=False``), because constant
folding would turn parameters into transposed/renamed copies that can no longer point into the weight file.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
import torch
from torch import nn

from adatsq.core.atomic import atomic_write, atomic_write_text
from adatsq.core.layout import OutputLayout, config_id_of
from adatsq.core.models.registry import family_of, get_spec
from adatsq.core.schedule import Schedule
from adatsq.export.graph_io import PREFIX, adapter_for
from adatsq.passes.onnx import (
    CleanupPass,
    ExternalizeWeightsPass,
    SetActivationBitsPass,
    WeightOnlyDequantPass,
)

__all__ = [
    "EXPORT_VERSION",
    "export_base_graph",
    "export_files",
    "export_inputs",
    "export_onnx",
    "load_quantized_model",
    "place_weights",
    "specialise",
    "write_trt_graphs",
]

EXPORT_VERSION = 2  # 2: the TensorRT twins (config_NN.trt.onnx), io.json weight inputs and shape ranges
OPSET = 21
WEIGHTS_LINK = "weights.safetensors"


def load_quantized_model(out_dir: Path, tensors: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The quantized transformer stored in ``out_dir`` (architecture from transformer_config.json, every
    value from weights.safetensors).

    The architecture is built with its parameters on the meta device (``accelerate.init_empty_weights`` with
    ``include_buffers=False``: no allocation, no random init; a 12 B model would take 48 GB in float32 otherwise) and its buffers for
    real, so non-persistent ones (rotary tables) are computed as in a normal build; the weight-store pass
    then assigns the file's tensors (no copy) and fails if any tensor is left on meta. ``float()`` makes the
    unquantized parameters float32 (the CPU numerics); packed codes, float16 scales and float32 biases of the
    QuantLinear modules are untouched (QuantLinear._apply). ``tensors``: the values to assign instead of the
    file's (LoadQuantizedWeightsPass)."""
    import diffusers
    from accelerate import init_empty_weights

    from adatsq.passes.weight_store import LoadQuantizedWeightsPass

    out_dir = Path(out_dir)
    cfg = json.loads((out_dir / "transformer_config.json").read_text())
    cls = getattr(diffusers, cfg["_class_name"])
    with torch.random.fork_rng(), init_empty_weights(include_buffers=False):
        model = cls.from_config(cfg).eval()
    LoadQuantizedWeightsPass(out_dir / "weights.safetensors", assign=True, tensors=tensors)(model)
    return model.float().eval()


def _share_hadamard_factors(model: ir.Model) -> None:
    """Every QLinear's Hadamard inputs (Constant nodes from the translation) → ONE initializer
    ``adatsq_hadamard_<n>`` per order, values checked; the dead Constants go. On the onnx-ir model, so the
    per-node copies (up to 4 MiB each at K = 12288) are never serialised; finalize_exported_model then
    finds the shared initializers in place."""
    import numpy as np
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE, hadamard_base, hadamard_initializer_name

    graph = model.graph
    shared: dict[int, ir.Value] = {}
    for node in graph:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        for slot in (4, 5):
            value = node.inputs[slot]
            producer = value.producer() if value is not None else None
            if producer is None or producer.op_type != "Constant" or "value" not in producer.attributes:
                continue
            array = producer.attributes["value"].as_tensor().numpy()
            order = array.shape[0]
            if order not in shared:
                if array.shape != (order, order) or not np.array_equal(array, hadamard_base(order)):
                    raise ValueError(
                        f"QLinear {node.name!r}: input {slot} is not the Hadamard base of order {order}"
                    )
                init = ir.Value(
                    name=hadamard_initializer_name(order),
                    shape=ir.Shape([order, order]),
                    type=ir.TensorType(ir.DataType.FLOAT),
                    const_value=ir.tensor(hadamard_base(order), name=hadamard_initializer_name(order)),
                )
                graph.register_initializer(init)
                shared[order] = init
            elif array.shape != (order, order):
                raise ValueError(f"QLinear {node.name!r}: input {slot} is not a square Hadamard factor")
            node.replace_input_with(slot, shared[order])
    RemoveUnusedNodesPass()(model)


def export_base_graph(
    model: nn.Module,
    family: str,
    latent_shape: tuple[int, ...],
    text_len: int,
    weights: Path | None = None,
    location: str = WEIGHTS_LINK,
) -> onnx.ModelProto:
    """The one exported graph (QLinear a_bits as set on the model; configs are applied by passes).

    With ``weights`` (the weight file the graphs will read), every parameter initializer is pointed into it
    on the exporter's onnx-ir model, before any ModelProto exists (:func:`externalize_ir_initializers`): the
    protobuf then never holds the weights (it could not beyond 2 GB), and the parameters exist once, in the
    torch model. Without, they stay inline (tiny models, tests)."""
    from adatsq.passes.onnx.externalize_weights import externalize_ir_initializers
    from adatsq.plugins.onnx_op import export_translation_table, finalize_exported_model

    adapter = adapter_for(family)
    wrapper = adapter.wrap(model).eval()
    config = model.config
    example = adapter.example_inputs(config, latent_shape, text_len)
    dynamic = adapter.dynamic_shapes(config)
    names = [s.name for s in adapter.inputs(config)]
    kwargs: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    for name in example:
        kwargs[name] = example[name] if name in names else None
        shapes[name] = dynamic[name] if name in names else None
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (),
            kwargs=kwargs,
            dynamo=True,
            opset_version=OPSET,
            custom_translation_table=export_translation_table(),
            dynamic_shapes=shapes,
            input_names=names,
            output_names=[adapter.output(config).name],
            optimize=False,
            verbose=False,
        )
    ir_model = program.model
    del program  # the exported program holds no tensor the torch model does not
    _share_hadamard_factors(ir_model)
    if weights is not None:
        externalize_ir_initializers(ir_model, weights, location=location, prefix=PREFIX)
    proto = ir.to_proto(ir_model)
    del ir_model
    return finalize_exported_model(proto)


def model_constants(model: nn.Module) -> frozenset[str]:
    """Graph names of the model's non-persistent buffers: tables computed from its config (Wan's RoPE
    frequencies), in no checkpoint and so not in the weight file; they stay inline in each graph."""
    return frozenset(PREFIX + n for n in set(dict(model.named_buffers())) - set(model.state_dict()))


def specialise(
    base: onnx.ModelProto,
    bits: dict[str, int],
    weights: Path,
    location: str = WEIGHTS_LINK,
    constants: frozenset[str] = frozenset(),
) -> onnx.ModelProto:
    """One configuration graph: a_bits per layer, parameters pointing into ``weights``, cleaned, checked;
    ``constants`` (:func:`model_constants`) stay inline."""
    model = copy.deepcopy(base)
    SetActivationBitsPass(bits, prefix=PREFIX)(model)
    WeightOnlyDequantPass()(model)
    ExternalizeWeightsPass(weights, location=location, prefix=PREFIX, constants=constants)(model)
    CleanupPass()(model)
    model.producer_name = "adatsq"
    return model


def place_weights(out_dir: Path) -> Path:
    """Put THE weight file where the graphs can read it: ``onnx/weights.safetensors`` is the one regular
    file and ``weights.safetensors`` a relative symlink to it (contract 3 paths, one copy of the bytes).

    Why this way round: onnx.load / onnx.checker refuse external data that is a symlink or has several
    hard links ("potential hardlink attack"), and ORT refuses a path outside the graph's folder, so the
    file the graphs name must be a plain, singly linked file inside ``onnx/``. Every other reader (the
    runner, the torch backend, safetensors) follows the root symlink. Idempotent; a fresh quantize stage
    output at the root (a regular file) replaces the previous one.
    """
    root = Path(out_dir)
    src = root / "weights.safetensors"
    dst = root / "onnx" / WEIGHTS_LINK
    dst.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(dst, root)
    if src.is_symlink() and os.readlink(src) == target and dst.is_file():
        return dst
    if not src.is_file() or src.is_symlink():
        raise FileNotFoundError(f"{src} is not the quantize stage's weight file; rerun the quantize stage")
    tmp_link = root / f".{src.name}.link.tmp"
    tmp_link.unlink(missing_ok=True)
    os.symlink(target, tmp_link)
    os.replace(src, dst)  # same file system: a rename, no copy
    os.replace(tmp_link, src)
    return dst


# --------------------------------------------------------------------------------------- the export stage


def export_inputs(out: OutputLayout, schedule: Schedule, quantize_key: str | None) -> dict[str, Any]:
    """What the export depends on: the quantized weights (the quantize stage's key), the configurations,
    the export code version and the torch/onnx versions."""
    return {
        "quantize": quantize_key,
        "act_layers": list(schedule.act_layers),
        "configs": [list(c) for c in schedule.configs],
        "resolution": list(schedule.resolution),
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }


def export_files(out: OutputLayout, schedule: Schedule) -> list[Path]:
    n = len(schedule.configs)
    twins = [out.trt_graph(k) for k in range(n)]
    return [out.onnx_graph(k) for k in range(n)] + twins + [out.io, out.onnx / WEIGHTS_LINK]


def write_trt_graphs(
    out: OutputLayout, n_configs: int, weights: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """``onnx/config_NN.trt.onnx`` for every configuration graph (export/trt_graph.py), each checked against
    the TensorRT parser tables (export/trt_check.py; a violation fails the compile with the full report).
    Returns io.json's ``weight_inputs`` (one list: every config's weight inputs are a subset of it, same
    name → same key, dtype and shape), ``weight_inputs_per_config``, ``trt_graphs`` and
    ``trt_embedded_weights`` (weight-file tensors the twins keep as constants: INT4 weight-only layers)."""
    from adatsq.export.trt_check import require_trt_ready
    from adatsq.export.trt_graph import write_trt_graph
    from adatsq.passes.onnx.externalize_weights import safetensors_layout

    t0 = time.perf_counter()
    layout = safetensors_layout(weights)
    union: dict[str, dict[str, Any]] = {}
    per_config: dict[str, list[str]] = {}
    graphs: dict[str, str] = {}
    embedded: list[str] = []
    for k in range(n_configs):
        twin = out.trt_graph(k)
        found = write_trt_graph(out.onnx_graph(k), twin, layout, embedded=embedded)
        require_trt_ready(twin)
        for w in found:
            rec = w.record()
            if union.setdefault(w.name, rec) != rec:
                raise ValueError(f"{twin.name}: weight input {w.name} differs from another configuration's")
        per_config[str(k)] = [w.name for w in found]
        graphs[str(k)] = twin.name
    kept = sorted(set(embedded))
    log(
        f"export: {n_configs} TensorRT twin graph(s) (weights as {len(union)} inputs"
        + (f", {len(kept)} INT4 weight-only constants embedded" if kept else "")
        + f"), parser check passed, {time.perf_counter() - t0:.1f} s"
    )
    return {
        "weight_inputs": list(union.values()),
        "weight_inputs_per_config": per_config,
        "trt_graphs": graphs,
        # INT4 weight-only DequantizeLinear weights: constants of every engine, not shared (trt_graph.py)
        "trt_embedded_weights": kept,
    }


def export_onnx(out: OutputLayout, schedule: Schedule, log: Callable[[str], None]) -> None:
    """Write onnx/config_NN.onnx for every distinct configuration, its TensorRT twin onnx/config_NN.trt.onnx,
    onnx/io.json and the weight link."""
    spec = get_spec(schedule.model)
    family = family_of(spec)
    model = load_quantized_model(out.root)
    latent_shape = family.latent_shape(spec, model, tuple(schedule.resolution))
    log(f"export: {spec.name} ({family.name}), {len(schedule.configs)} configuration(s)")
    weights = place_weights(out.root)
    base = export_base_graph(model, family.name, latent_shape, spec.text_len, weights=weights)
    n = len(schedule.configs)
    constants = model_constants(model)
    for k, cfg in enumerate(schedule.configs):
        graph = specialise(base, dict(zip(schedule.act_layers, cfg)), weights, constants=constants)
        atomic_write(out.onnx_graph(k), lambda p, g=graph: onnx.save_model(g, str(p)))
    for stale in sorted(out.onnx.glob("config_*.onnx")):
        k = config_id_of(stale)
        if k is not None and k >= n:
            stale.unlink()
    twins = write_trt_graphs(out, n, weights, log)
    adapter = adapter_for(family.name)
    record = adapter.io_record(model.config, latent_shape, spec.text_len, spec.guidance_scale)
    record.update(
        {
            "opset": OPSET,
            "ir_version": base.ir_version,
            "configs": {f"{k:02d}": out.onnx_graph(k).name for k in range(n)},
            "weights": f"onnx/{WEIGHTS_LINK} (weights.safetensors is a symlink to it)",
            "latent_shape": list(latent_shape),
            "text_len": spec.text_len,
            **twins,
        }
    )
    atomic_write_text(out.io, json.dumps(record, indent=2) + "\n")
