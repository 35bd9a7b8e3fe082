"""Export stage on the session-compiled tiny models: structure, shared weights, golden numerics vs torch.

Golden numerics are certified, not bounded (:mod:`helpers.ties`): ORT's and torch's float summation orders
differ (and with them the CPU, the kernels and the thread counts), so a code whose x̃/s sits on a rounding tie
may round differently, and one such flip moves a tiny model's output by up to ~1e-2. Per configuration graph,
(1) the graph's output equals the torch QuantLinear model's on the same inputs, or differs by certified tie
flips only, and (2) at EVERY activation-quantized node the function body's codes equal the reference
quantizer's on the node's own input, except for tie flips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from helpers.golden import check, config_graphs, flux_kwargs, golden, wan_kwargs, zimage_kwargs
from onnx import TensorProto, helper

from adatsq.core.schedule import load_schedule
from adatsq.export.graph_io import adapter_for
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.onnx.cleanup import checkable
from adatsq.passes.onnx.externalize_weights import safetensors_layout
from adatsq.passes.onnx.set_activation_bits import qlinear_layers
from adatsq.passes.quant_linear import quant_linears


def test_structure(compiled_tiny_flux: Path) -> None:
    out = compiled_tiny_flux
    s = load_schedule(out / "schedule.json")
    assert len(s.configs) >= 2, "fixture must have several configurations"
    graphs = config_graphs(out)
    assert [p.name for p in graphs] == [f"config_{k:02d}.onnx" for k in range(len(s.configs))]
    n_quantized = len(quant_linears(load_quantized_model(out)))
    for k, path in enumerate(graphs):
        m = onnx.load(str(path), load_external_data=False)
        assert m.ir_version == 10
        assert {i.domain: i.version for i in m.opset_import}[""] == 21
        layers = qlinear_layers(m)
        assert len(layers) == n_quantized
        bits = dict(zip(s.act_layers, s.configs[k]))
        for name, nodes in layers.items():
            for block, node in enumerate(nodes):
                a = {x.name: helper.get_attribute_value(x) for x in node.attribute}["a_bits"]
                assert a == bits.get(name, 16), name
                assert node.name == (name if block == 0 else f"{name}#{block}")
        onnx.checker.check_model(checkable(m), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(checkable(m), strict_mode=True)
        types = [t.data_type for t in m.graph.initializer]
        types += [v.type.tensor_type.elem_type for v in inferred.graph.value_info]
        types += [
            a.t.data_type for n in m.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
        ]
        types += [a.i for n in m.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
        bad = {TensorProto.DOUBLE, TensorProto.COMPLEX64, TensorProto.COMPLEX128}
        assert not bad & set(types)


def test_weights_shared_not_copied(compiled_tiny_flux: Path) -> None:
    out = compiled_tiny_flux
    weights = out / "onnx" / "weights.safetensors"
    root = out / "weights.safetensors"
    # one copy of the bytes: a plain, singly linked file in onnx/ (what onnx.load accepts), the root a symlink
    assert weights.is_file() and not weights.is_symlink() and weights.stat().st_nlink == 1
    assert root.is_symlink() and root.resolve() == weights.resolve()
    onnx.load(str(config_graphs(out)[0]))  # external data loads with onnx's own path checks
    layout = safetensors_layout(weights)
    wsize = weights.stat().st_size
    graph_sizes = []
    for path in config_graphs(out):
        m = onnx.load(str(path), load_external_data=False)
        external = 0
        for t in m.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                ext = {e.key: e.value for e in t.external_data}
                assert ext["location"] == "weights.safetensors"
                rec = layout[t.name.removeprefix("model.")]
                assert (int(ext["offset"]), int(ext["length"])) == (rec["offset"], rec["length"])
                external += rec["length"]
            else:
                assert t.name.startswith("adatsq_hadamard_") or len(t.raw_data) < 1024, t.name
        # every stored tensor the model uses (packed weights, scales, biases, norms) is referenced
        assert external >= 0.95 * (wsize - 8 - len(json.dumps(layout)))
        graph_sizes.append(path.stat().st_size)
    # on-disk bytes with N configs vs 1: the growth is N-1 small graphs, never a weight copy
    one = graph_sizes[0] + wsize
    many = sum(graph_sizes) + wsize
    print(f"onnx/ bytes: 1 config {one}, {len(graph_sizes)} configs {many}; weights {wsize}")
    assert many - one == sum(graph_sizes[1:])
    assert max(graph_sizes) < 0.5 * wsize


def test_golden_flux(compiled_tiny_flux: Path) -> None:
    check(golden(compiled_tiny_flux, flux_kwargs))


@pytest.mark.parametrize("method", ["smoothquant", "svdquant", "vidit-q"])
def test_golden_flux_smoothed_methods(tmp_path: Path, method: str) -> None:
    """--method smoothquant / svdquant: every activation-quantized layer's graph input goes through
    Mul(x, <layer>.smooth_inv) (an initializer in the weight file) into its QLinear node (svdquant: and into its
    low-rank MatMuls), and the graphs are golden like the rest."""
    from click.testing import CliRunner

    from adatsq.compiler.cli import main

    out = tmp_path / method
    args = ["tiny-flux", "-o", str(out), "--target", "4", "--method", method, "--steps", "2"]
    result = CliRunner().invoke(
        main, [*args, "--calib-samples", "1", "--heldout-samples", "1", "--until", "export"]
    )
    assert result.exit_code == 0, result.output
    s = load_schedule(out / "schedule.json")
    model = load_quantized_model(out)
    smoothed = {n for n, m in quant_linears(model).items() if m.smooth_inv is not None}
    assert smoothed == set(s.act_layers)
    m = onnx.load(str(config_graphs(out)[0]), load_external_data=False)
    producers = {o: n for n in m.graph.node for o in n.output}
    for layer, nodes in qlinear_layers(m).items():
        if layer in smoothed:
            mul = producers[nodes[0].input[0]]
            if mul.op_type == "Slice":  # a layer of several rotation blocks (vidit-q rotates)
                mul = producers[mul.input[0]]
            assert mul.op_type == "Mul" and any(i.endswith(f"{layer}.smooth_inv") for i in mul.input), layer
    matmuls = [n for n in m.graph.node if n.op_type == "MatMul" and any("lowrank_down" in i for i in n.input)]
    assert len(matmuls) == (len(smoothed) if method == "svdquant" else 0)
    check(golden(out, flux_kwargs))


@pytest.mark.slow
def test_golden_wan(compiled_tiny_wan: Path) -> None:
    check(golden(compiled_tiny_wan, wan_kwargs))


def test_golden_zimage(compiled_tiny_zimage: Path) -> None:
    check(golden(compiled_tiny_zimage, zimage_kwargs))


def test_zimage_structure_and_io(compiled_tiny_zimage: Path) -> None:
    out = compiled_tiny_zimage
    s = load_schedule(out / "schedule.json")
    graphs = config_graphs(out)
    assert [p.name for p in graphs] == [f"config_{k:02d}.onnx" for k in range(len(s.configs))]
    io = json.loads((out / "onnx" / "io.json").read_text())
    assert io["family"] == "zimage"
    assert [i["name"] for i in io["inputs"]] == [
        "hidden_states",
        "timestep",
        "cap_feats",
        "x_rope",
        "cap_rope",
    ]
    bad = {TensorProto.DOUBLE, TensorProto.COMPLEX64, TensorProto.COMPLEX128}
    for path in graphs:
        m = onnx.load(str(path), load_external_data=False)
        dims = {
            i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input
        }
        assert all(isinstance(d, str) for d in (dims["hidden_states"][0], *dims["hidden_states"][3:]))
        assert isinstance(dims["cap_feats"][1], str)  # dynamic caption length
        onnx.checker.check_model(checkable(m), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(checkable(m), strict_mode=True)
        types = [t.data_type for t in m.graph.initializer]
        types += [v.type.tensor_type.elem_type for v in inferred.graph.value_info]
        types += [a.i for n in m.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
        assert not bad & set(types)


def test_polygraphy_inspect_and_run(compiled_tiny_flux: Path, tmp_path: Path) -> None:
    graph = config_graphs(compiled_tiny_flux)[
        0
    ]  # in place: the weight file in onnx/ is what onnx.load accepts
    exe = shutil.which("polygraphy")
    if exe is None:
        pytest.skip("polygraphy CLI not installed")
    poly = [exe]
    r = subprocess.run(
        [*poly, "inspect", "model", str(graph), "--show", "layers"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "QLinear" in r.stdout
    from polygraphy.json import save_json

    model = load_quantized_model(compiled_tiny_flux)
    feeds = adapter_for("flux").feeds(model.config, flux_kwargs(model))
    save_json([feeds], str(tmp_path / "inputs.json"))
    r = subprocess.run(
        [*poly, "run", str(graph), "--onnxrt", "--load-inputs", str(tmp_path / "inputs.json"),
         "--save-outputs", str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "out.json").exists()
