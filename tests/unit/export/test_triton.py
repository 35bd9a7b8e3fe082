"""The Triton model repositories (export/triton.py): every config.pbtxt parses as tritonclient's ModelConfig
protobuf with the tensors io.json names, the denoiser's record follows the schedule and io.json's weight
inputs, the sampler tables are the real scheduler's, and the launch scripts start what they say.

The parse uses tritonclient's own ``model_config_pb2`` (the message Triton reads config.pbtxt into) with
``google.protobuf.text_format``: a field Triton does not know, a wrong type or unbalanced braces fail there
as they would fail the server's model load. The server itself runs in tests/e2e/test_triton_server.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.triton_server import find_install, model_config_pb2

from adatsq.core.schedule import load_schedule
from adatsq.export.triton import (
    CPU_REPOSITORY,
    DENOISER_MODEL,
    IDENTITY_OUTPUT,
    STEP_OUTPUTS,
    config_model_name,
    sampler_tables,
    weight_inputs,
    write_cpu_repository,
    write_triton_repository,
)
from adatsq.export.trtexec import PLUGIN_LIBRARY, load_io

W = [
    {"name": "w.blocks.0.qkv.packed", "key": "blocks.0.qkv.packed", "dtype": "uint8", "shape": [96, 16]},
    {"name": "w.blocks.0.qkv.scales", "key": "blocks.0.qkv.scales", "dtype": "float16", "shape": [96, 1]},
    {"name": "w.blocks.0.out.packed", "key": "blocks.0.out.packed", "dtype": "uint8", "shape": [32, 16]},
]
IO: dict[str, Any] = {
    "family": "flux",
    "inputs": [
        {"name": "hidden_states", "dtype": "float32", "shape": ["batch", "img_tokens", 16]},
        {"name": "encoder_hidden_states", "dtype": "float32", "shape": ["batch", "txt_tokens", 32]},
        {"name": "timestep", "dtype": "float32", "shape": ["batch"]},
        {"name": "img_rope", "dtype": "float32", "shape": [2, "img_tokens", 48]},
    ],
    "output": {"name": "sample", "dtype": "float32", "shape": ["batch", "img_tokens", 16]},
    "weight_inputs": W,
    "weight_inputs_per_config": {"0": [w["name"] for w in W], "1": [W[0]["name"], W[1]["name"]]},
}
STEP_CONFIGS = (0, 1, 1, 0, 0)
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32"}


@pytest.fixture(scope="module")
def pb2() -> Any:
    module = model_config_pb2(find_install())
    if module is None:
        pytest.skip(
            "tritonclient is not installed: run `python3 tests/helpers/triton_server.py install` (CI does)"
        )
    return module


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    write_triton_repository(
        tmp_path,
        config_ids=[0, 1],
        step_configs=STEP_CONFIGS,
        sigmas=sigmas,
        timesteps=sigmas[:-1],
        scheduler="FlowMatchEulerDiscreteScheduler",
        family="flux",
        io=IO,
    )
    return tmp_path


def _parse(pb2: Any, path: Path) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def _io(pb2: Any, block: Any) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (pb2.DataType.Name(t.data_type), list(t.dims)) for t in block}


def test_every_config_pbtxt_parses_as_model_config(pb2: Any, repos: Path) -> None:
    files = sorted(repos.glob("*/*/config.pbtxt"))
    # 2 engines + denoiser in triton/, 2 ORT models + denoiser in triton_cpu/
    assert len(files) == 6, files
    for path in files:
        cfg = _parse(pb2, path)
        assert cfg.name == path.parent.name
        assert cfg.max_batch_size == 0
    graph_inputs = {
        t["name"]: (DTYPES[t["dtype"]], [-1 if isinstance(d, str) else d for d in t["shape"]])
        for t in IO["inputs"]
    }
    for k in (0, 1):
        plan = _parse(pb2, repos / "triton" / config_model_name(k) / "config.pbtxt")
        assert plan.platform == "tensorrt_plan"
        weights = {
            w["name"]: (DTYPES[w["dtype"]], w["shape"])
            for w in W
            if w["name"] in IO["weight_inputs_per_config"][str(k)]
        }
        assert _io(pb2, plan.input) == {**graph_inputs, **weights}
        assert _io(pb2, plan.output) == {"sample": ("TYPE_FP32", [-1, -1, 16])}
        assert [g.kind for g in plan.instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]
        assert plan.optimization.cuda.graphs

        cpu = _parse(pb2, repos / CPU_REPOSITORY / config_model_name(k) / "config.pbtxt")
        assert cpu.backend == "python"
        assert _io(pb2, cpu.input) == graph_inputs  # the plain graph: weights are external data, not inputs
        assert _io(pb2, cpu.output) == {
            "sample": ("TYPE_FP32", [-1, -1, 16]),
            IDENTITY_OUTPUT: ("TYPE_INT32", [1]),
        }
        params = {key: p.string_value for key, p in cpu.parameters.items()}
        assert params == {
            "onnx_graph": f"../../onnx/config_{k:02d}.onnx",
            "config_id": str(k),
            "output": "sample",
        }
        model_dir = repos / CPU_REPOSITORY / config_model_name(k)
        assert (model_dir / params["onnx_graph"]).resolve() == (
            repos / "onnx" / f"config_{k:02d}.onnx"
        ).resolve()
        assert (model_dir / "1" / "model.py").is_file()
    for base in ("triton", CPU_REPOSITORY):
        den = _parse(pb2, repos / base / DENOISER_MODEL / "config.pbtxt")
        assert den.backend == "python"
        assert list(_io(pb2, den.input)) == ["hidden_states", "encoder_hidden_states", "img_rope"]
        assert _io(pb2, den.output) == {
            "latent_out": ("TYPE_FP32", [-1, -1, 16]),
            "step_latents": ("TYPE_FP32", [5, -1, -1, 16]),
            "step_timesteps": ("TYPE_FP32", [5, -1]),
            "step_velocities": ("TYPE_FP32", [5, -1, -1, 16]),
            "step_config_ids": ("TYPE_INT32", [5]),
        }


@pytest.mark.parametrize(
    "fixture",
    ["compiled_tiny_flux", "compiled_tiny_zimage", pytest.param("compiled_tiny_wan", marks=pytest.mark.slow)],
)
def test_generated_repositories_parse(
    pb2: Any, fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The repositories written from each tiny family's real io.json (and the twin CPU variant where the
    export wrote TensorRT twins) parse, and every plan model takes its configuration's weight inputs."""
    out: Path = request.getfixturevalue(fixture)
    io = load_io(out / "onnx")
    assert io is not None
    s = load_schedule(out / "schedule.json")
    sigmas, taus = sampler_tables(out, s)
    common: dict[str, Any] = {
        "config_ids": range(len(s.configs)),
        "step_configs": s.step_configs,
        "sigmas": sigmas,
        "timesteps": taus,
        "scheduler": s.sampler.scheduler,
        "family": io["family"],
        "io": io,
    }
    write_triton_repository(tmp_path, **common)
    if io.get("trt_graphs"):
        write_cpu_repository(tmp_path, **common, twin=True, name="twin")
    files = sorted(tmp_path.glob("*/*/config.pbtxt"))
    assert len(files) == (3 if io.get("trt_graphs") else 2) * (len(s.configs) + 1)
    for path in files:
        assert _parse(pb2, path).name == path.parent.name
    graph_inputs = [t["name"] for t in io["inputs"]]
    for k in range(len(s.configs)):
        plan = _parse(pb2, tmp_path / "triton" / config_model_name(k) / "config.pbtxt")
        assert [t.name for t in plan.input] == graph_inputs + [w["name"] for w in weight_inputs(io, k)]


def test_the_parse_rejects_what_triton_rejects(pb2: Any, repos: Path, tmp_path: Path) -> None:
    """The check can fail: an unknown field and an unknown enum value are parse errors."""
    from google.protobuf import text_format

    text = (repos / "triton" / config_model_name(0) / "config.pbtxt").read_text()
    for bad in (text.replace("dims:", "dimz:", 1), text.replace("TYPE_FP32", "TYPE_FLOAT32", 1)):
        with pytest.raises(text_format.ParseError):
            text_format.Parse(bad, pb2.ModelConfig())


def test_denoiser_records(repos: Path) -> None:
    gpu = json.loads((repos / "triton" / DENOISER_MODEL / "1" / "denoiser.json").read_text())
    cpu = json.loads((repos / CPU_REPOSITORY / DENOISER_MODEL / "1" / "denoiser.json").read_text())
    for den in (gpu, cpu):
        assert den["step_models"] == [config_model_name(c) for c in STEP_CONFIGS]
        assert den["step_configs"] == list(STEP_CONFIGS)
        assert len(den["sigmas"]) == len(STEP_CONFIGS) + 1
        assert len(den["timesteps"]) == len(STEP_CONFIGS)
        assert den["latent_input"] == "hidden_states"
        assert den["passthrough_inputs"] == ["encoder_hidden_states", "img_rope"]
    assert gpu["identity_output"] is None
    assert cpu["identity_output"] == IDENTITY_OUTPUT
    assert "weights" not in cpu  # the ORT graphs read their weights as external data
    assert gpu["weights"]["file"] == "../../onnx/weights.safetensors"
    assert gpu["weights"]["per_model"] == {
        config_model_name(0): [[w["name"], w["key"]] for w in W],
        config_model_name(1): [[w["name"], w["key"]] for w in W[:2]],
    }
    assert set(STEP_OUTPUTS) <= set((repos / "triton" / "README.md").read_text().replace("`", " ").split())


def test_sampler_tables_are_the_schedulers(compiled_tiny_flux: Path) -> None:
    """σ are the diffusers scheduler's float32 sigmas and τ = t/1000 in float32, as the runner feeds them."""
    from adatsq.core.models.base import timesteps_for
    from adatsq.core.models.registry import family_of, get_spec
    from adatsq.runtime.runner import EngineRunner

    s = load_schedule(compiled_tiny_flux / "schedule.json")
    sigmas, taus = sampler_tables(compiled_tiny_flux, s)
    runner = EngineRunner(compiled_tiny_flux, backend="ort")
    spec = get_spec(s.model)
    family = family_of(spec)
    latent_shape = family.latent_shape(spec, runner.transformer(), tuple(s.resolution))
    scheduler, ts = timesteps_for(family, spec, s.steps, tuple(latent_shape))
    assert sigmas == scheduler.sigmas.tolist()
    assert sigmas[-1] == 0.0
    assert taus == (ts / 1000).tolist()
    assert np.array(taus, dtype=np.float32).tolist() == taus  # float32 values, exactly


def _fake_server(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in ``tritonserver`` that records its arguments and LD_PRELOAD."""
    record = tmp_path / "args.txt"
    fake = tmp_path / "fake_tritonserver"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "LD_PRELOAD=${{LD_PRELOAD:-}}" "$@" > {record}\n')
    fake.chmod(0o755)
    return fake, record


def test_launch_scripts(repos: Path, tmp_path: Path) -> None:
    fake, record = _fake_server(tmp_path)
    for base in ("triton", CPU_REPOSITORY):
        script = repos / base / "launch.sh"
        assert os.access(script, os.X_OK)
        subprocess.run(["bash", "-n", str(script)], check=True)
    env = {**os.environ, "TRITONSERVER": str(fake), "HTTP_PORT": "18123", "BACKEND_DIRECTORY": "/opt/be"}
    env.pop("LD_PRELOAD", None)

    def launch(base: str, **extra: str) -> tuple[int, list[str], str]:
        record.unlink(missing_ok=True)
        res = subprocess.run(
            ["bash", str(repos / base / "launch.sh"), "--log-verbose=1"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        args = record.read_text().splitlines() if record.exists() else []
        return res.returncode, args, res.stderr

    code, args, _ = launch(CPU_REPOSITORY)
    assert code == 0
    assert f"--model-repository={repos / CPU_REPOSITORY}" in args
    assert {"--http-address=127.0.0.1", "--http-port=18123", "--backend-directory=/opt/be"} <= set(args)
    assert args[-1] == "--log-verbose=1"
    assert not any("plugins=" in a for a in args) and args[0] == "LD_PRELOAD="

    code, _, err = launch("triton")  # no plugin library built: refuses with one line
    assert code == 2
    assert PLUGIN_LIBRARY in err and "not found" in err
    lib = repos / "plugins" / PLUGIN_LIBRARY
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.write_bytes(b"")
    code, args, _ = launch("triton")
    assert code == 0
    assert f"--backend-config=tensorrt,plugins={lib}" in args
    assert f"--model-repository={repos / 'triton'}" in args
    assert args[0] == "LD_PRELOAD="
    code, args, _ = launch("triton", ADATSQ_PLUGIN_LOAD="preload")
    assert code == 0
    assert args[0] == f"LD_PRELOAD={lib}"
    assert not any("plugins=" in a for a in args)
