"""The export stage at scale: the quantized model is loaded without a float copy (parameters built on the meta
device, values assigned from weights.safetensors), and the exported graphs never hold a parameter inline.

Self-contained (no compile fixture): a tiny model gets round-to-nearest QuantLinear layers and is written the
way the quantize stage writes it (save_weight_store + transformer_config.json).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from adatsq.core.layout import OutputLayout
from adatsq.core.models.registry import family_of, get_spec
from adatsq.export.onnx_export import export_onnx, load_quantized_model
from adatsq.passes.onnx.externalize_weights import safetensors_layout
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant, QuantLinear
from adatsq.passes.weight_store import (
    LoadQuantizedWeightsPass,
    meta_tensors,
    save_weight_store,
)


def _write_store(out: Path, model_name: str, w_bits: int = 4) -> tuple[str, ...]:
    """The tiny model with RTN QuantLinear layers, stored like the quantize stage does; its act layers."""
    spec = get_spec(model_name)
    family = family_of(spec)
    model = family.build_tiny(spec, seed=1)
    inv = family.inventory(model)
    act = set(inv.act_layers)
    InsertQuantLinearPass({n: LayerQuant(w_bits, n in act, spec.group_size) for n in inv.quantized_layers})(
        model
    )
    out.mkdir(parents=True, exist_ok=True)
    save_weight_store(out / "weights.safetensors", model)
    cfg = dict(model.config)
    cfg["_class_name"] = type(model).__name__
    plain = lambda v: list(v) if isinstance(v, (tuple, set, frozenset)) else str(v)  # noqa: E731
    (out / "transformer_config.json").write_text(json.dumps(cfg, default=plain))
    return inv.act_layers


def _load_float_init(out: Path) -> torch.nn.Module:
    """The former path: a float32, randomly initialised model whose tensors are copied over."""
    import diffusers

    cfg = json.loads((out / "transformer_config.json").read_text())
    with torch.random.fork_rng():
        model = getattr(diffusers, cfg["_class_name"]).from_config(cfg).eval()
    LoadQuantizedWeightsPass(out / "weights.safetensors")(model)
    return model.float().eval()


@pytest.mark.parametrize("model_name", ["tiny-flux", "tiny-wan", "tiny-zimage"])
def test_meta_load_equals_float_init_load(tmp_path: Path, model_name: str) -> None:
    _write_store(tmp_path, model_name)
    new = load_quantized_model(tmp_path)
    old = _load_float_init(tmp_path)
    assert not meta_tensors(new)
    for kind in ("named_parameters", "named_buffers"):  # buffers include the non-persistent ones (RoPE)
        a = dict(getattr(new, kind)())
        b = dict(getattr(old, kind)())
        assert a.keys() == b.keys(), kind
        for name in a:
            if a[name] is None:
                assert b[name] is None, name
                continue
            assert a[name].dtype == b[name].dtype, name
            assert torch.equal(a[name], b[name]), name
    q_new = {n: m for n, m in new.named_modules() if isinstance(m, QuantLinear)}
    q_old = {n: m for n, m in old.named_modules() if isinstance(m, QuantLinear)}
    assert q_new.keys() == q_old.keys() and q_new
    for name, m in q_new.items():
        o = q_old[name]
        assert (m.w_packed.dtype, m.w_scale.dtype) == (torch.uint8, torch.float16), name
        attrs = ("in_features", "out_features", "w_bits", "group_size", "rotate_input", "act_quantized")
        assert [getattr(m, k) for k in attrs] == [getattr(o, k) for k in attrs], name
        assert torch.equal(m.codes, o.codes), name


def test_meta_load_refuses_missing_tensors(tmp_path: Path) -> None:
    _write_store(tmp_path, "tiny-flux")
    from safetensors.torch import load_file, save_file

    path = tmp_path / "weights.safetensors"
    tensors = load_file(str(path))
    dropped = next(k for k in tensors if not k.endswith((".w_packed", ".w_scale", ".bias")))
    del tensors[dropped]
    save_file(tensors, str(path), metadata=json.loads(json.dumps(_metadata(path))))
    with pytest.raises(Exception, match="lacks|meta"):
        load_quantized_model(tmp_path)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def test_empty_weights_keep_buffers_real() -> None:
    """What load_quantized_model relies on: parameters on meta, buffers (rotary tables) real."""
    from accelerate import init_empty_weights

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)
            self.register_buffer("freqs", torch.arange(4.0), persistent=False)

    with init_empty_weights(include_buffers=False):
        m = M()
    assert m.lin.weight.is_meta and m.lin.bias.is_meta and isinstance(m.lin.weight, torch.nn.Parameter)
    assert not m.freqs.is_meta and torch.equal(m.freqs, torch.arange(4.0))
    assert not torch.nn.Linear(2, 2).weight.is_meta  # restored on exit


def _inline_bytes(t: TensorProto) -> int:
    return len(t.raw_data) if t.HasField("raw_data") else onnx.numpy_helper.to_array(t).nbytes


def test_config_graphs_hold_no_weights(tmp_path: Path) -> None:
    act = _write_store(tmp_path, "tiny-flux")
    spec = get_spec("tiny-flux")
    schedule = types.SimpleNamespace(
        model="tiny-flux",
        act_layers=act,
        configs=((4,) * len(act), (8,) * len(act)),
        resolution=spec.resolution,
    )
    export_onnx(OutputLayout(tmp_path), schedule, lambda _m: None)  # type: ignore[arg-type]
    weights = tmp_path / "onnx" / "weights.safetensors"
    layout = safetensors_layout(weights)
    graphs = [p for _, p in OutputLayout(tmp_path).onnx_graphs()]
    assert len(graphs) == 2
    for path in graphs:
        m = onnx.load(str(path), load_external_data=False)
        inits = list(m.graph.initializer)
        hadamard = [t for t in inits if t.name.startswith("adatsq_hadamard_")]
        assert hadamard
        biggest_factor = max(_inline_bytes(t) for t in hadamard)
        for t in inits:
            if t.data_location == TensorProto.EXTERNAL:
                ext = {e.key: e.value for e in t.external_data}
                rec = layout[t.name.removeprefix("model.")]
                assert ext["location"] == "weights.safetensors"
                assert (int(ext["offset"]), int(ext["length"])) == (rec["offset"], rec["length"]), t.name
                continue
            assert t.name.removeprefix("model.") not in layout, f"{t.name} inline"  # no weight tensor inline
            assert _inline_bytes(t) <= biggest_factor, t.name
        assert sum(_inline_bytes(t) for t in inits if t.data_location != TensorProto.EXTERNAL) < 2**20


def _export_tiny_flux(out: Path, keep_dtype: torch.dtype) -> Path:
    """tiny-flux with its unquantized parameters rounded to bfloat16 and stored in ``keep_dtype``; config 0."""
    spec = get_spec("tiny-flux")
    family = family_of(spec)
    model = family.build_tiny(spec, seed=2)
    inv = family.inventory(model)
    act = set(inv.act_layers)
    InsertQuantLinearPass({n: LayerQuant(3, n in act, spec.group_size) for n in inv.quantized_layers})(model)
    quantized = {n for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    for name, p in model.named_parameters():
        if name.rpartition(".")[0] not in quantized:
            p.data = p.data.to(torch.bfloat16).to(keep_dtype)
    out.mkdir(parents=True)
    save_weight_store(out / "weights.safetensors", model)
    cfg = dict(model.config)
    cfg["_class_name"] = type(model).__name__
    plain = lambda v: list(v) if isinstance(v, (tuple, set, frozenset)) else str(v)  # noqa: E731
    (out / "transformer_config.json").write_text(json.dumps(cfg, default=plain))
    schedule = types.SimpleNamespace(
        model="tiny-flux", act_layers=inv.act_layers, configs=((4,) * len(act),), resolution=spec.resolution
    )
    export_onnx(OutputLayout(out), schedule, lambda _m: None)  # type: ignore[arg-type]
    return out / "onnx" / "config_00.onnx"


def test_bfloat16_store_is_read_through_cast(tmp_path: Path) -> None:
    """A store written by a bfloat16 quantize (GPU): the float32 graph reads the kept parameters from the
    file through a Cast, with the same outputs as a float32 store of the same values."""
    from helpers.ort_session import ort_session

    from adatsq.export.graph_io import adapter_for

    g32 = _export_tiny_flux(tmp_path / "f32", torch.float32)
    g16 = _export_tiny_flux(tmp_path / "bf16", torch.bfloat16)
    m = onnx.load(str(g16), load_external_data=False)
    bf16 = [t for t in m.graph.initializer if t.data_type == TensorProto.BFLOAT16]
    assert bf16 and all(t.data_location == TensorProto.EXTERNAL for t in bf16)
    casts = {n.input[0] for n in m.graph.node if n.op_type == "Cast"}
    assert {t.name for t in bf16} <= casts
    model = load_quantized_model(tmp_path / "bf16")
    adapter = adapter_for("flux")
    spec = get_spec("tiny-flux")
    latent = family_of(spec).latent_shape(spec, model, spec.resolution)
    example = adapter.example_inputs(model.config, latent, spec.text_len)
    feeds = {s.name: example[s.name].numpy() for s in adapter.inputs(model.config)}
    y32 = ort_session(g32).run(None, feeds)[0]
    y16 = ort_session(g16).run(None, feeds)[0]
    np.testing.assert_array_equal(y16, y32)


@pytest.mark.parametrize("w_bits", [3, 4, 8])
def test_quant_linear_from_packed_equals_constructor(w_bits: int) -> None:
    from adatsq.plugins.formats import format_for_bits
    from adatsq.plugins.reference import quantize_weight_rtn

    g = torch.Generator().manual_seed(w_bits)
    w = torch.randn(24, 64, generator=g)
    codes, scale = quantize_weight_rtn(w, w_bits, 32)
    bias = torch.randn(24, generator=g)
    ref = QuantLinear(codes, scale, bias, w_bits, 32, rotate_input=True)
    packed = format_for_bits(w_bits).pack(codes)
    q = QuantLinear.from_packed(packed, scale.half(), bias, w_bits, 32, True, 64)
    assert q.w_packed is packed  # no copy
    for k in (
        "in_features",
        "out_features",
        "w_bits",
        "group_size",
        "rotate_input",
        "act_quantized",
        "a_bits",
    ):
        assert getattr(q, k) == getattr(ref, k), k
    assert torch.equal(q.codes, codes)
    x = torch.randn(3, 64, generator=g)
    torch.testing.assert_close(q(x), ref(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="packed weight"):
        QuantLinear.from_packed(packed[:, :-1], scale, bias, w_bits, 32, True, 64)
    with pytest.raises(ValueError, match="do not fit"):
        QuantLinear.from_packed(packed, scale[:, :1], bias, w_bits, 32, True, 64)
