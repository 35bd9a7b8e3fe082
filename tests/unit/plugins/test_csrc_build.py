"""CI check that every CUDA source of the plugin kernels compiles with nvcc for sm_90a (no GPU needed).

A build error fails CI. Skipped, with the reason, only where nvcc is absent. The host helpers of the
library (Hadamard factors, Paley matrices) are then checked against plugins/hadamard.py through ctypes,
which needs the CUDA runtime but no GPU.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import shutil
import subprocess

import pytest
import torch

from adatsq.plugins.hadamard import hadamard_factors, paley_base

CSRC = pathlib.Path(__file__).resolve().parents[3] / "plugins" / "csrc"
NVCC = os.environ.get("NVCC", "nvcc")

pytestmark = pytest.mark.skipif(
    shutil.which(NVCC) is None, reason=f"{NVCC} not found: CUDA sources not compiled"
)


@pytest.fixture(scope="module")
def built_lib(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    build = tmp_path_factory.mktemp("csrc_build")
    res = subprocess.run(
        ["make", "-C", str(CSRC), f"BUILD={build}", f"NVCC={NVCC}", f"-j{min(8, os.cpu_count() or 1)}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert res.returncode == 0, f"nvcc build failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return build / "libadatsq_kernels.so"


def test_every_cuda_source_compiles(built_lib: pathlib.Path) -> None:
    sources = sorted(CSRC.glob("*.cu"))
    assert {p.name for p in sources} >= {
        "rotate_quant.cu",
        "rotate_quant_warp.cu",
        "rotate_quant_warps.cu",
        "qgemm_mma.cu",
        "expand_weight.cu",
        "hadamard_host.cu",
        "qgemm_sm90.cu",
        "qlinear_launch.cu",
        "weight_only_gemv.cu",
    }
    for src in sources:
        assert (built_lib.parent / (src.stem + ".o")).is_file(), f"{src.name} produced no object"
    assert built_lib.is_file()


def test_exported_c_abi(built_lib: pathlib.Path) -> None:
    so = ctypes.CDLL(str(built_lib))
    for name in ("adatsq_rotate_quant", "adatsq_qgemm", "adatsq_expand_weight", "adatsq_qlinear_launch",
                 "adatsq_hadamard_factors", "adatsq_paley_matrix", "adatsq_qgemm_sm90", "adatsq_qgemm_sm90_workspace",
                 "adatsq_qlinear_workspace_size", "adatsq_weight_scales_gmajor", "adatsq_weight_only_gemv"):  # fmt: skip
        assert hasattr(so, name), name


@pytest.mark.parametrize("k", [3072, 12288, 15360, 1536, 8960, 3840, 10240, 2560, 4096])
def test_host_factors_and_paley_match_python(built_lib: pathlib.Path, k: int) -> None:
    so = ctypes.CDLL(str(built_lib))
    m, p = ctypes.c_int(0), ctypes.c_int(0)
    assert so.adatsq_hadamard_factors(ctypes.c_int64(k), ctypes.byref(m), ctypes.byref(p)) == 0
    assert (m.value, p.value) == hadamard_factors(k)
    if m.value > 1:
        out = torch.empty(m.value, m.value, dtype=torch.int8)
        assert so.adatsq_paley_matrix(m.value, ctypes.c_void_p(out.data_ptr())) == 0
        assert torch.equal(out, paley_base(m.value).to(torch.int8))


def _up(b: int) -> int:
    return (b + 255) // 256 * 256


@pytest.mark.parametrize(
    ("m", "n", "k", "group", "a_bits", "w_bits", "fp8_path"),
    [
        (4608, 3072, 3072, 128, 4, 4, True),
        (333, 640, 15360, 128, 3, 3, True),
        (4608, 3072, 3072, 128, 8, 4, False),  # a = 8: int8 codes, mma.sync
        (4608, 3072, 3072, 64, 4, 4, False),  # G = 64: not the sm90 kernel's 1x128 scales
        (4608, 3072, 3072, 128, 4, 8, False),  # int8 weights
        (100, 3076, 3072, 128, 4, 4, False),  # N % 8 != 0
    ],
)
def test_qlinear_workspace_layout(
    built_lib: pathlib.Path, m: int, n: int, k: int, group: int, a_bits: int, w_bits: int, fp8_path: bool
) -> None:
    """The TensorRT plugin's workspace (host code, no GPU): codes + scales, and on the sm90 FP8 path also the
    expanded weight (N·K bytes) and its float32 scales, each 256-byte aligned, + 256 bytes of slack."""
    so = ctypes.CDLL(str(built_lib))
    f = so.adatsq_qlinear_workspace_size
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_int] * 3
    base = _up(m * k) + _up(m * (k // group) * 4)
    extra = _up(n * k) + _up(n * (k // group) * 4) if fp8_path else 0
    assert f(m, n, k, group, a_bits, w_bits) == base + extra + 256
