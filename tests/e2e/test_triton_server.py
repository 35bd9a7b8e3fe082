"""A whole generation on a REAL tritonserver (2.51, python backend, CPU): the packaged ``triton_cpu/``
repository of a compiled tiny-flux, over HTTP on 127.0.0.1, against the runner's own ORT run.

The server comes from ``python3 tests/helpers/triton_server.py install`` (CI runs it; without it this module
skips and says so). It is started by the repository's own generated ``launch.sh`` on free ports, must be ready
within a bounded time (else the test fails with the server log's tail), and is stopped by its pid.

What is checked, per step i of the schedule (teacher-forced, as tests/unit/runtime/test_trajectory.py):

* the configuration that ANSWERED step i (the per-config model's own ``adatsq_config_id`` output) is the
  schedule's, and the server's own statistics count exactly the schedule's steps per model;
* step i's velocity, on the latent the server fed it, is the schedule's configuration graph's output on those
  inputs: equal to torch graph arithmetic within STEP_MATCH or certified as quantizer tie flips
  (:func:`helpers.runs.certify_calls`), which a wrong configuration fails;
* the Euler update is the runner's: x_{i+1} = x_i + (σ_{i+1} − σ_i)·v_i with σ the runner's own scheduler
  sigmas, bit for bit (elementwise float32 operations, no summation), and τ_i equals the runner's timestep feed;
* the request the client builds equals the runner's step-0 feeds exactly, and the final latent equals the
  runner's free-running one within :func:`helpers.ties.free_run_bound` (a few tie flips' worth; the two runs
  are in different processes, so their summation orders need not agree).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.ort_session import ort_session
from helpers.runs import GraphReference, StepCall, certify_calls, recorded_ort_run
from helpers.ties import SAME_GRAPH, free_run_bound, rel
from helpers.triton_server import TritonServer, find_install, import_tritonclient

from adatsq.core.models.base import timesteps_for
from adatsq.export.triton import CPU_REPOSITORY, DENOISER_MODEL, STEP_OUTPUTS, config_model_name

pytestmark = pytest.mark.slow

INSTALL = find_install()
if INSTALL is None:
    pytest.skip(
        "tritonserver is not installed locally: run `python3 tests/helpers/triton_server.py install` (CI does)",
        allow_module_level=True,
    )
import_tritonclient(INSTALL)

from adatsq.runtime.triton_client import (  # noqa: E402 - tritonclient is importable only now
    TritonClientError,
    infer,
    main,
    synthetic_request,
    unpack_latents,
)

SEED, SAMPLES = 7, 2


@pytest.fixture(scope="module")
def packaged(compiled_tiny_flux: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled tiny-flux through the real build (skips: no TensorRT) and package stages."""
    from adatsq.compiler.context import CompileContext
    from adatsq.compiler.settings import CompileConfig
    from adatsq.compiler.stages.build import run_build
    from adatsq.compiler.stages.package import run_package

    out = tmp_path_factory.mktemp("triton") / "tiny-flux"
    shutil.copytree(compiled_tiny_flux, out, symlinks=True)
    cfg = json.loads((out / "compile_config.json").read_text())
    cfg["out"] = str(out)
    ctx = CompileContext(CompileConfig.from_dict(cfg))
    run_build(ctx)
    run_package(ctx)
    return out


@pytest.fixture(scope="module")
def server(packaged: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    assert INSTALL is not None
    log = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    srv = TritonServer(INSTALL, packaged / CPU_REPOSITORY / "launch.sh", log)
    srv.start()
    print(f"tritonserver ready in {srv.start_seconds:.1f} s on {srv.url}")
    yield srv
    code = srv.stop()
    print(f"tritonserver stopped in {srv.stop_seconds:.1f} s, exit code {code}")
    assert srv.proc is not None and srv.proc.poll() is not None
    assert code == 0, srv.log_tail()


def test_generation_over_http_matches_the_runner(packaged: Path, server: TritonServer) -> None:
    runner, x_runner, calls = recorded_ort_run(packaged, seed=SEED, n=SAMPLES)
    s = runner.schedule
    assert [c.step for c in calls] == list(range(s.steps))  # Flux: one engine call per step

    request = synthetic_request(packaged, seed=SEED, n=SAMPLES)
    assert sorted(request) == sorted(k for k in calls[0].feeds if k != "timestep")
    for name, value in request.items():
        np.testing.assert_array_equal(value, calls[0].feeds[name], err_msg=name)

    t0 = time.monotonic()
    result = infer(server.url, request)
    print(f"generation over HTTP: {time.monotonic() - t0:.2f} s for {s.steps} steps")

    # 1. the answering configuration per step, and the server's own count per model
    assert result["step_config_ids"].tolist() == list(s.step_configs)
    for k in range(len(s.configs)):
        stats = server.stats(config_model_name(k))["model_stats"][0]
        assert stats["inference_count"] == list(s.step_configs).count(k), config_model_name(k)
    assert server.stats(DENOISER_MODEL)["model_stats"][0]["inference_count"] == 1

    # 2. the Euler update with the runner's own scheduler, bit for bit; τ_i is the runner's timestep feed
    latent_shape = runner.family.latent_shape(runner.spec, runner.transformer(), tuple(s.resolution))
    scheduler, _ = timesteps_for(runner.family, runner.spec, s.steps, tuple(latent_shape))
    sigmas = scheduler.sigmas.numpy()
    lat, vel, tau = result["step_latents"], result["step_velocities"], result["step_timesteps"]
    np.testing.assert_array_equal(lat[0], request["hidden_states"])
    for i in range(s.steps):
        np.testing.assert_array_equal(tau[i], calls[i].feeds["timestep"], err_msg=f"step {i}")
        update = lat[i] + (sigmas[i + 1] - sigmas[i]) * vel[i]
        nxt = lat[i + 1] if i + 1 < s.steps else result["latent_out"]
        np.testing.assert_array_equal(nxt, update, err_msg=f"Euler update of step {i}")

    # 3. each step's velocity is the schedule's configuration graph on the server's own step inputs
    served = [
        StepCall(
            i,
            s.step_configs[i],
            {
                **{k: v for k, v in request.items() if k != "hidden_states"},
                "hidden_states": lat[i],
                "timestep": tau[i],
            },
            vel[i],
        )
        for i in range(s.steps)
    ]
    certificates = certify_calls(packaged, served, GraphReference(packaged))
    for c in certificates:
        for f in c.flips:
            print(f"step {c.call.step}: certified tie flip at {f} ({c.err:.1e})")

    # 4. against the runner's free-running result
    per_step = [float(np.abs(c.output - v).max()) for c, v in zip(calls, vel)]
    final = unpack_latents(packaged, result["latent_out"])
    err = rel(final, x_runner.numpy())
    print(f"server vs runner: per-step velocity max |Δ| {per_step}, final latent relative {err:.1e}")
    assert final.shape == tuple(x_runner.shape)
    assert err <= free_run_bound(s.model)


def test_weight_inputs_passed_by_the_denoiser(packaged: Path, tmp_path: Path) -> None:
    """The GPU repository's weight path, on the CPU: per-config models run the TensorRT twins (weights as
    inputs) and the denoiser, holding weights.safetensors once, passes each step model its weight inputs. Each
    step's velocity must be the twin's, run in-process on the same inputs with the weights from the file (same
    graph, same ORT kernels and thread count: to SAME_GRAPH), so a missing, swapped or stale weight fails."""
    from safetensors.numpy import load_file

    from adatsq.core.schedule import load_schedule
    from adatsq.export.triton import sampler_tables, weight_inputs, write_cpu_repository
    from adatsq.export.trtexec import load_io

    io = load_io(packaged / "onnx")
    assert io is not None
    if not io.get("trt_graphs"):
        pytest.skip("this export wrote no TensorRT twins (onnx/io.json has no trt_graphs)")
    s = load_schedule(packaged / "schedule.json")
    sigmas, taus = sampler_tables(packaged, s)
    write_cpu_repository(
        packaged,
        config_ids=range(len(s.configs)),
        step_configs=s.step_configs,
        sigmas=sigmas,
        timesteps=taus,
        scheduler=s.sampler.scheduler,
        family="flux",
        io=io,
        twin=True,
        name="triton_cpu_twin",
    )
    assert INSTALL is not None
    request = synthetic_request(packaged, seed=SEED, n=SAMPLES)
    with TritonServer(INSTALL, packaged / "triton_cpu_twin" / "launch.sh", tmp_path / "twin.log") as srv:
        result = infer(srv.url, request)
    assert result["step_config_ids"].tolist() == list(s.step_configs)
    weights = load_file(str(packaged / "onnx" / "weights.safetensors"))
    lat, vel, tau = result["step_latents"], result["step_velocities"], result["step_timesteps"]
    sessions: dict[int, Any] = {}
    for i, k in enumerate(s.step_configs):
        wanted = weight_inputs(io, k)
        assert wanted, f"configuration {k}'s twin has no weight inputs"
        if k not in sessions:
            sessions[k] = ort_session(packaged / "onnx" / io["trt_graphs"][str(k)])
        feeds = {**request, "hidden_states": lat[i], "timestep": tau[i]}
        feeds.update({w["name"]: weights[w["key"]] for w in wanted})
        y = sessions[k].run(None, feeds)[0]
        assert rel(vel[i], y) <= SAME_GRAPH, f"step {i}: {rel(vel[i], y):.1e}"
        nxt = lat[i + 1] if i + 1 < s.steps else result["latent_out"]
        np.testing.assert_array_equal(
            nxt, lat[i] + (np.float32(sigmas[i + 1]) - np.float32(sigmas[i])) * vel[i]
        )
    print(
        f"twin repository: {len(weight_inputs(io, 0))} weight inputs per request, steps {list(s.step_configs)}"
    )


def test_client_cli(packaged: Path, server: TritonServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    out = tmp_path / "latents.npy"
    res = CliRunner().invoke(main, [str(packaged), "--url", server.url, "--seed", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads((packaged / "schedule.json").read_text())
    assert f"configuration per step: {list(s['step_configs'])}" in res.output
    latents = np.load(out)
    steps = np.load(out.with_suffix(".steps.npz"))
    assert sorted(steps.files) == sorted(STEP_OUTPUTS)
    assert latents.ndim == 4 and latents.shape[0] == 1 and np.isfinite(latents).all()
    assert steps["step_latents"].shape[0] == s["steps"]


def test_client_errors_are_one_line(packaged: Path, tmp_path: Path) -> None:
    from adatsq.runtime.triton_client import denoiser_record

    with pytest.raises(TritonClientError, match="cannot reach tritonserver"):
        infer(f"127.0.0.1:{_closed_port()}", synthetic_request(packaged), timeout=5)
    with pytest.raises(TritonClientError, match="is missing"):
        denoiser_record(tmp_path)


def _closed_port() -> int:
    from helpers.triton_server import free_ports

    return free_ports(1)[0]


def test_a_server_that_never_gets_ready_fails_in_bounded_time(tmp_path: Path) -> None:
    """The start helper's deadline: a 'server' that never answers is stopped by its pid and reported."""
    assert INSTALL is not None
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/usr/bin/env bash\necho pretending to load\nexec sleep 120\n")
    srv = TritonServer(INSTALL, hang, tmp_path / "hang.log", ready_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="pretending to load"):
        srv.start()
    assert time.monotonic() - t0 < 30
    assert srv.proc is not None and srv.proc.poll() is not None  # stopped, by its pid
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/usr/bin/env bash\necho no such model repository >&2\nexit 3\n")
    with pytest.raises(RuntimeError, match="exited with code 3"):
        TritonServer(INSTALL, crash, tmp_path / "crash.log").start()
