"""Package stage: Triton repository, trtexec scripts, plugin record, manifest (and verify_manifest)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from adatsq.compiler.context import CompileContext
from adatsq.compiler.settings import CompileConfig
from adatsq.compiler.stages.build import run_build
from adatsq.compiler.stages.package import run_package
from adatsq.export.manifest import verify_manifest

IO = {
    "inputs": [
        {"name": "hidden_states", "dtype": "float32", "shape": ["batch", 64, 64]},
        {"name": "timestep", "dtype": "float32", "shape": ["batch"]},
        {"name": "encoder_hidden_states", "dtype": "float32", "shape": ["batch", "txt", 32]},
    ],
    "outputs": [{"name": "output", "dtype": "float32", "shape": ["batch", 64, 64]}],
    "dims": {"batch": {"min": 1, "opt": 1, "max": 2}, "txt": {"min": 4, "opt": 8, "max": 16}},
}


@functools.cache
def compiled_dir() -> Path:
    """A tiny-flux compile up to quantize, shared by the test modules of one pytest process (each test copies
    it). Private to the process: a directory shared between processes would meet the one-writer lock of a
    concurrent run, or a stale compile of older code."""
    out = Path(tempfile.mkdtemp(prefix="adatsq-export-tests-")) / "out"
    atexit.register(shutil.rmtree, out.parent, ignore_errors=True)
    import adatsq

    adatsq.compile(
        model="tiny-flux",
        target=4.0,
        out=str(out),
        until="quantize",
        steps=4,
        calib_samples=2,
        heldout_samples=2,
    )
    return out


def make_ctx(out: Path) -> CompileContext:
    cfg = json.loads((out / "compile_config.json").read_text())
    cfg["out"] = str(out)
    return CompileContext(CompileConfig.from_dict(cfg))


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copy of the compiled dir with fake onnx/config_NN.onnx + io.json, then build (skips) and package."""
    out = tmp_path_factory.mktemp("pkg") / "out"
    shutil.copytree(compiled_dir(), out)
    ctx = make_ctx(out)
    (out / "onnx").mkdir(exist_ok=True)
    for k in range(len(ctx.schedule.configs)):
        (out / "onnx" / f"config_{k:02d}.onnx").write_bytes(b"not a real graph %d" % k)
    (out / "onnx" / "io.json").write_text(json.dumps(IO))
    run_build(ctx)
    run_package(ctx)
    return out


def _balanced(text: str) -> bool:
    depth = {"{": 0, "[": 0}
    pairs = {"}": "{", "]": "["}
    for ch in re.sub(r'"[^"]*"', "", text):
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def test_triton_configs_structurally_valid(packaged: Path) -> None:
    sched = json.loads((packaged / "schedule.json").read_text())
    for k in range(len(sched["configs"])):
        d = packaged / "triton" / f"adatsq_config_{k:02d}"
        text = (d / "config.pbtxt").read_text()
        assert _balanced(text)
        assert f'name: "adatsq_config_{k:02d}"' in text
        assert 'platform: "tensorrt_plan"' in text
        assert "max_batch_size: 0" in text
        assert 'name: "hidden_states"' in text
        assert "data_type: TYPE_FP32" in text
        assert "dims: [ -1, 64, 64 ]" in text
        assert (d / "1" / "README.md").exists()
        assert not (d / "1" / "model.plan").exists()
    den = packaged / "triton" / "adatsq_denoiser"
    text = (den / "config.pbtxt").read_text()
    assert _balanced(text)
    assert 'backend: "python"' in text
    cfg = json.loads((den / "1" / "denoiser.json").read_text())
    assert cfg["step_models"] == [f"adatsq_config_{c:02d}" for c in sched["step_configs"]]
    assert len(cfg["sigmas"]) == sched["steps"] + 1
    assert cfg["sigmas"][-1] == 0.0
    compile(  # noqa: S102 - syntax check of the generated model.py
        (den / "1" / "model.py").read_text(), "model.py", "exec"
    )
    assert "plugins=" in (packaged / "triton" / "README.md").read_text()


def test_trtexec_scripts(packaged: Path) -> None:
    build = (packaged / "trtexec" / "build_config_00.sh").read_text()
    assert "--onnx=onnx/config_00.onnx" in build
    assert "--saveEngine=trt/config_00.plan" in build
    assert "--minShapes=hidden_states:1x64x64,timestep:1,encoder_hidden_states:1x4x32" in build
    assert "--maxShapes=hidden_states:2x64x64,timestep:2,encoder_hidden_states:2x16x32" in build
    assert "--staticPlugins=" in build
    assert "--fp16" not in build
    prof = (packaged / "trtexec" / "profile_config_00.sh").read_text()
    assert "--loadEngine=trt/config_00.plan" in prof
    assert "--dumpProfile" in prof
    assert "--exportLayerInfo" in prof
    assert "--shapes=hidden_states:1x64x64" in prof
    assert os.access(packaged / "trtexec" / "build_config_00.sh", os.X_OK)


def test_plugin_record(packaged: Path) -> None:
    rec = json.loads((packaged / "plugins" / "BUILD.json").read_text())
    assert rec["built"] is False
    assert "reason" in rec
    assert rec["verified_against_tensorrt"] is False
    assert any(s.endswith("qlinear_plugin.cpp") for s in rec["sources"])


def test_manifest_hashes_and_tamper(packaged: Path, tmp_path: Path) -> None:
    assert verify_manifest(packaged) == []
    man = json.loads((packaged / "manifest.json").read_text())
    assert man["model"]["real_model"] is True  # false only for --random-weights (schedule.random_weights)
    for name in (
        "schedule.json",
        "weights.safetensors",
        "transformer_config.json",
        "onnx/config_00.onnx",
        "trt/BUILD_SKIPPED.txt",
        "report/report.md",
    ):
        assert name in man["files"], name
    assert man["versions"]["tensorrt"] is None
    assert man["versions"]["torch"]
    assert [e["config_id"] for e in man["engines"]] == list(range(man["schedule"]["configs"]))
    copy = tmp_path / "c"
    shutil.copytree(packaged, copy, symlinks=True)
    w = copy / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    problems = verify_manifest(copy)
    assert len(problems) == 1
    assert problems[0].startswith("weights.safetensors")
    assert "sha256" in problems[0]
    (copy / "schedule.json").unlink()
    assert any("schedule.json" in p and "missing" in p for p in verify_manifest(copy))
    (copy / "manifest.json").unlink()
    assert "missing" in verify_manifest(copy)[0]


def test_package_without_onnx(tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(compiled_dir(), out)
    shutil.rmtree(out / "onnx", ignore_errors=True)
    ctx = make_ctx(out)
    run_build(ctx)
    run_package(ctx)
    assert verify_manifest(out) == []
    assert (out / "triton" / "adatsq_config_00" / "config.pbtxt").exists()
