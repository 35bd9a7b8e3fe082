"""The C++ runtime (runtime/cpp): builds with cmake, its ctest suite passes (``-LE gpu``: JSON reader, output
directory validation with bad inputs, step → configuration mapping, Euler CPU reference, and -- where the
TensorRT headers exist -- the runner failing with one clear line when libnvinfer is absent), and its Euler update
equals diffusers' FlowMatchEulerDiscreteScheduler.step bit for bit on the tiny-flux sampler's own sigmas.

The CUDA kernel test is registered with label ``gpu`` (``ctest -L gpu``, exit 77 = skipped without a device);
nothing here runs TensorRT. Needs cmake and g++ (skips, saying so, without them); nvcc and the TensorRT headers
(``$TENSORRT_ROOT``, default ``../tensorrt`` beside the repository) add the kernel and runner targets.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tensorrt import ROOT, TRT_ROOT

CPP = ROOT / "runtime" / "cpp"

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("g++") is None,
    reason="cmake or g++ not found: the C++ runtime is not built",
)


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cpp_runtime")
    cfg = ["cmake", "-S", str(CPP), "-B", str(out), f"-DTENSORRT_ROOT={TRT_ROOT}"]
    if shutil.which("nvcc") is None and Path("/usr/local/cuda/bin/nvcc").is_file():
        cfg.append("-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc")
    res = _run(cfg)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = _run(["cmake", "--build", str(out), "-j2"])
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return out


def test_ctest_cpu_suite(build: Path) -> None:
    res = _run(["ctest", "--test-dir", str(build), "-LE", "gpu", "--output-on-failure"])
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "100% tests passed" in res.stdout
    for name in ("test_json", "test_artifacts", "test_euler"):
        assert name in res.stdout


def _sampler_fixture(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """tiny-flux's real scheduler (its shifted sigmas), random x and v per step, and scheduler.step's result of
    every step; returns (sigmas, timesteps)."""
    from adatsq.core.models.base import timesteps_for
    from adatsq.core.models.registry import family_of, get_spec

    spec = get_spec("tiny-flux")
    family = family_of(spec)
    scheduler, timesteps = timesteps_for(family, spec, 8, (4, 16, 16))
    scheduler.set_begin_index(0)
    g = torch.Generator().manual_seed(0)
    n = 4 * 16 * 16
    x = torch.randn(1, 64, 16, generator=g)
    x0 = x.clone()
    vs, xs = [], []
    for t in timesteps:
        v = torch.randn(1, 64, 16, generator=g)
        x = scheduler.step(v, t, x, return_dict=False)[0]
        vs.append(v)
        xs.append(x.clone())
    sigmas = scheduler.sigmas.to(torch.float32).numpy()
    with open(path, "wb") as f:
        f.write(struct.pack("<iq", len(timesteps), n))
        f.write(sigmas.astype("<f4").tobytes())
        f.write(x0.numpy().astype("<f4").tobytes())
        for v in vs:
            f.write(v.numpy().astype("<f4").tobytes())
        for s in xs:
            f.write(s.numpy().astype("<f4").tobytes())
    return sigmas, timesteps.to(torch.float32).numpy()


def test_euler_update_equals_the_python_sampler(build: Path, tmp_path: Path) -> None:
    fixture = tmp_path / "euler.bin"
    sigmas, timesteps = _sampler_fixture(fixture)
    res = _run([str(build / "test_euler"), str(fixture)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "8 steps x 1024 values, 0 step(s) differ" in res.stdout
    # the runner derives sigma_i = t_i / num_train_timesteps from schedule.json (float32): at most 1 ulp from
    # the scheduler's own sigma (timesteps are stored as sigma * 1000)
    derived = timesteps / np.float32(1000.0)
    assert np.all(np.abs(derived - sigmas[:-1]) <= np.spacing(sigmas[:-1]))
    assert sigmas[-1] == 0.0


def test_gpu_kernel_test_is_registered(build: Path) -> None:
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("nvcc not found: the CUDA kernel target is not built")
    res = _run(["ctest", "--test-dir", str(build), "-L", "gpu", "-N"])
    assert "test_euler_gpu" in res.stdout


def test_example_fails_with_one_line_without_tensorrt(build: Path, tmp_path: Path) -> None:
    exe = build / "adatsq_run"
    if not exe.is_file():
        pytest.skip(f"TensorRT headers not found at {TRT_ROOT}/include: the runner is not built")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "ADATSQ_NVINFER": "libnvinfer_absent.so"}
    # not an output directory: the first file it needs is named, in one line
    res = _run([str(exe), str(out)], env=env)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0
    assert "manifest.json: cannot be read" in res.stderr
