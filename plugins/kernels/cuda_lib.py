"""ctypes binding of the C ABI in plugins/csrc/qlinear_kernels.h (libadatsq_kernels.so).

The library is the same one a TensorRT plugin links; torch reaches it through ctypes with raw device
pointers and the current CUDA stream, so the launches are captured by CUDA graphs like any other kernel.
It is found at ``$ADATSQ_KERNELS_LIB``, else built on first use with ``make`` (nvcc) into
``$ADATSQ_KERNELS_BUILD`` (default: ``~/.cache/adatsq/kernels``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib
import shutil
import subprocess

import torch

__all__ = ["CSRC", "KernelError", "lib"]

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"

DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class KernelError(RuntimeError):
    """A CUDA entry point returned a nonzero cudaError_t."""


def _build(build_dir: pathlib.Path) -> pathlib.Path:
    if shutil.which(os.environ.get("NVCC", "nvcc")) is None:
        raise KernelError("nvcc not found: set ADATSQ_KERNELS_LIB to a prebuilt libadatsq_kernels.so")
    build_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["make", "-C", str(CSRC), f"BUILD={build_dir}", "-j8"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise KernelError(f"building the CUDA kernels failed:\n{res.stdout}\n{res.stderr}")
    return build_dir / "libadatsq_kernels.so"


@functools.lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    path_env = os.environ.get("ADATSQ_KERNELS_LIB")
    if path_env:
        path = pathlib.Path(path_env)
    else:
        build = pathlib.Path(
            os.environ.get("ADATSQ_KERNELS_BUILD", pathlib.Path.home() / ".cache/adatsq/kernels")
        )
        path = _build(build)
    so = ctypes.CDLL(str(path))
    i64, i32, vp = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    so.adatsq_rotate_quant.argtypes = [vp, i32, i64, i64, i64, i32, i32, i32, vp, i32, i32, i32, vp, vp, vp]
    so.adatsq_expand_weight.argtypes = [vp, i32, i64, i64, i32, vp, vp]
    so.adatsq_weight_scales_gmajor.argtypes = [vp, i64, i64, vp, vp]
    so.adatsq_qgemm_sm90.argtypes = [vp, vp, vp, vp, vp, vp, i32, i64, i64, i64, vp, ctypes.c_size_t, vp]
    so.adatsq_qgemm_sm90_workspace.argtypes = [i64, i64, i64, ctypes.POINTER(ctypes.c_size_t)]
    so.adatsq_qlinear_workspace_size.argtypes = [i64, i64, i64, i32, i32, i32]
    so.adatsq_qlinear_workspace_size.restype = ctypes.c_size_t
    so.adatsq_qlinear_launch.argtypes = [vp, i32, i64, i64, i32, i32, i32, vp, i32, i32, vp, i32, vp, vp, vp, i32,
                                         i64, vp, ctypes.c_size_t, vp]  # fmt: skip
    so.adatsq_qgemm.argtypes = [vp, i32, vp, vp, i32, vp, vp, vp, i32, i64, i64, i64, i32, vp]
    so.adatsq_weight_only_gemv.argtypes = [vp, i32, i64, i64, i64, vp, i32, vp, vp, vp, i32, i64, i32, vp]
    so.adatsq_hadamard_factors.argtypes = [i64, ctypes.POINTER(i32), ctypes.POINTER(i32)]
    so.adatsq_paley_matrix.argtypes = [i32, vp]
    for fn in ("adatsq_rotate_quant", "adatsq_expand_weight", "adatsq_qgemm", "adatsq_hadamard_factors",
               "adatsq_paley_matrix", "adatsq_weight_only_gemv", "adatsq_weight_scales_gmajor",
               "adatsq_qgemm_sm90", "adatsq_qgemm_sm90_workspace", "adatsq_qlinear_launch"):  # fmt: skip
        getattr(so, fn).restype = i32
    return so


def check(code: int, what: str) -> None:
    if code != 0:
        raise KernelError(f"{what} failed with cudaError_t {code}")


def stream_ptr(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream
