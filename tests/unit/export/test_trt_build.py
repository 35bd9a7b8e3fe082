"""Build stage: clean skip without TensorRT, and our TensorRT call sequence against a recording FAKE module.

The fake-``tensorrt`` tests check only the order and arguments of OUR calls (strongly typed network, plugin
loaded before parsing, one profile with the io.json shapes, shared timing cache, one plan per config, plugin
layer check). They do not exercise TensorRT itself; nothing here has run against a real TensorRT.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from test_package import IO, compiled_dir, make_ctx

from adatsq.compiler.stages.build import build_outputs, run_build
from adatsq.core.errors import CompileError
from adatsq.export import trt_build
from adatsq.export.trt_build import count_plugin_layers


@pytest.fixture
def out(tmp_path: Path) -> Path:
    o = tmp_path / "out"
    shutil.copytree(compiled_dir(), o)
    (o / "onnx").mkdir(exist_ok=True)
    return o


def _write_onnx(o: Path, n: int, qlinear_nodes: int = 2) -> None:
    """n config graphs and their twins (config_NN.trt.onnx, named in io.json trt_graphs)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("QLinear", ["x"], [f"y{i}"], domain="adatsq") for i in range(qlinear_nodes)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [])
    for k in range(n):
        onnx.save(helper.make_model(g), str(o / "onnx" / f"config_{k:02d}.onnx"))
        onnx.save(helper.make_model(g), str(o / "onnx" / f"config_{k:02d}.trt.onnx"))
    io = {**IO, "trt_graphs": {str(k): f"config_{k:02d}.trt.onnx" for k in range(n)}}
    (o / "onnx" / "io.json").write_text(json.dumps(io))


def test_skip_without_tensorrt(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_build, "tensorrt_available", lambda: False)
    _write_onnx(out, 2)
    ctx = make_ctx(out)
    run_build(ctx)
    text = (out / "trt" / "BUILD_SKIPPED.txt").read_text()
    assert "not importable" in text
    for k in range(2):
        assert f"trtexec --onnx=onnx/config_{k:02d}.trt.onnx --saveEngine=trt/config_{k:02d}.plan" in text
    assert "--minShapes=hidden_states:1x64x64" in text
    assert not list((out / "trt").glob("*.plan"))
    assert build_outputs(ctx) == [out / "trt" / "BUILD_SKIPPED.txt"]


class _Recorder:
    """A fake ``tensorrt`` module recording calls (not TensorRT: only our call sequence is checked)."""

    def __init__(self, plugin_layers: int) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.plugin_layers = plugin_layers

    def module(self) -> types.ModuleType:
        rec = self
        m = types.ModuleType("tensorrt")
        m.__version__ = "10.99-fake"

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                pass

        class Registry:
            def load_library(self, path: str) -> object:
                rec.calls.append(("load_library", path))
                return object()

            def get_creator(self, name: str, version: str, ns: str) -> object:
                rec.calls.append(("get_creator", name, version, ns))
                return object()

        class Profile:
            def set_shape(self, name: str, lo: tuple, mid: tuple, hi: tuple) -> None:
                rec.calls.append(("set_shape", name, tuple(lo), tuple(mid), tuple(hi)))

        class Cache:
            def serialize(self) -> bytes:
                return b"cache"

        class Config:
            profiling_verbosity = None

            def create_timing_cache(self, data: bytes) -> Cache:
                rec.calls.append(("create_timing_cache",))
                return rec.cache

            def set_timing_cache(self, cache: Cache, ignore: bool) -> None:
                rec.calls.append(("set_timing_cache", id(cache)))

            def add_optimization_profile(self, p: Profile) -> None:
                rec.calls.append(("add_optimization_profile",))

        class Tensor:
            def __init__(self, name: str) -> None:
                self.name = name

        class Network:
            num_inputs = len(IO["inputs"])

            def get_input(self, i: int) -> Tensor:
                return Tensor(IO["inputs"][i]["name"])

        class Builder:
            def __init__(self, logger: Logger) -> None:
                self.registry = Registry()

            def get_plugin_registry(self) -> Registry:
                return self.registry

            def create_network(self, flags: int) -> Network:
                rec.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, net: Network, cfg: Config) -> bytes:
                rec.calls.append(("build_serialized_network",))
                return b"PLAN"

        class OnnxParser:
            num_errors = 0

            def __init__(self, net: Network, logger: Logger) -> None:
                pass

            def set_flag(self, flag: int) -> None:
                rec.calls.append(("set_flag", flag))

            def parse_from_file(self, path: str) -> bool:
                rec.calls.append(("parse_from_file", Path(path).name))
                return True

        class Inspector:
            def get_engine_information(self, fmt: int) -> str:
                layers = [
                    {"Name": f"q{i}", "LayerType": "PluginV3", "PluginName": "QLinear"}
                    for i in range(rec.plugin_layers)
                ]
                return json.dumps({"Layers": layers})

        class Engine:
            def create_engine_inspector(self) -> Inspector:
                return Inspector()

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> Engine:
                return Engine()

        rec.cache = Cache()
        m.Logger = Logger
        m.Builder = Builder
        m.OnnxParser = OnnxParser
        m.Runtime = Runtime
        m.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        m.OnnxParserFlag = types.SimpleNamespace(ENABLE_PLUGIN_OVERRIDE=7)
        m.ProfilingVerbosity = types.SimpleNamespace(DETAILED=2)
        m.LayerInformationFormat = types.SimpleNamespace(JSON=1)
        return m


def _fake(monkeypatch: pytest.MonkeyPatch, out: Path, plugin_layers: int) -> _Recorder:
    rec = _Recorder(plugin_layers)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module())
    monkeypatch.setattr(trt_build, "tensorrt_available", lambda: True)
    lib = out / "plugins" / "libadatsq_trt_plugins_dynamic.so"
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.write_bytes(b"fake library")
    monkeypatch.setenv("ADATSQ_TRT_PLUGIN", str(lib))
    return rec


def test_fake_tensorrt_call_sequence(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks our call sequence against a FAKE tensorrt module, not TensorRT itself."""
    rec = _fake(monkeypatch, out, plugin_layers=2)
    _write_onnx(out, 2)
    run_build(make_ctx(out))
    names = [c[0] for c in rec.calls]
    assert names.index("load_library") < names.index("parse_from_file")
    assert ("get_creator", "QLinear", "1", "adatsq") in rec.calls
    assert [c for c in rec.calls if c[0] == "create_network"] == [("create_network", 1 << 1)] * 2
    # the TensorRT twins, not the ONNX Runtime graphs
    assert [c[1] for c in rec.calls if c[0] == "parse_from_file"] == [
        "config_00.trt.onnx",
        "config_01.trt.onnx",
    ]
    assert ("set_flag", 7) in rec.calls
    shapes = {c[1]: c[2:] for c in rec.calls if c[0] == "set_shape"}
    assert shapes["hidden_states"] == ((1, 64, 64), (1, 64, 64), (2, 64, 64))
    assert shapes["encoder_hidden_states"] == ((1, 4, 32), (1, 8, 32), (2, 16, 32))
    assert names.count("add_optimization_profile") == 2
    assert len({c[1] for c in rec.calls if c[0] == "set_timing_cache"}) == 1  # one cache shared by all builds
    for k in range(2):
        assert (out / "trt" / f"config_{k:02d}.plan").read_bytes() == b"PLAN"
    assert (out / "trt" / "timing.cache").read_bytes() == b"cache"
    record = json.loads((out / "trt" / "build.json").read_text())
    assert [e["plugin_layers"] for e in record["engines"]] == [2, 2]
    assert not (out / "trt" / "BUILD_SKIPPED.txt").exists()


def test_fake_tensorrt_function_body_fallback_is_caught(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE tensorrt: an engine with fewer QLinear plugin layers than QLinear nodes fails the build."""
    _fake(monkeypatch, out, plugin_layers=0)
    _write_onnx(out, 1)
    with pytest.raises(CompileError, match="function body"):
        run_build(make_ctx(out))
    assert not (out / "trt" / "config_00.plan").exists()


def test_count_plugin_layers() -> None:
    """By layer TYPE only: a name containing QLinear is not a plugin layer, a plugin layer needs no such name."""
    info = {
        "Layers": [
            {"LayerType": "PluginV3", "Name": "transformer_blocks.0.attn.to_q"},
            {"LayerType": "PluginV3", "Name": "x_embedder"},
            {"LayerType": "MatrixMultiply", "Name": "QLinear_x"},
            {"LayerType": "Reformat", "Name": "Reformatting CopyNode for QLinear"},
        ]
    }
    assert count_plugin_layers(json.dumps(info)) == 2
    assert count_plugin_layers({"Layers": ["QLinear_3 [PluginV3]", "MatMul"]}) == 0  # no type: not counted
