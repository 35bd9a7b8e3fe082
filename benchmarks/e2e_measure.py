"""Measurement helpers of benchmarks/bench_e2e.py: settings, CUDA-event timing, the per-kernel breakdown
(torch.profiler, grouped by kernel name), weight bytes and GPU memory."""

from __future__ import annotations

import dataclasses
import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

CATEGORIES = (  # first match wins; kernel (GPU) or op (CPU smoke) names, lower case
    ("weight expansion", r"expand_kernel|expand_weight|scales_kernel"),
    ("weight-only GEMV", r"wo_gemv|weight_only"),
    ("activation rotate+quantize", r"rotate|quant|amax"),
    ("attention", r"flash|fmha|attention|sdpa|mha"),
    ("GEMM", r"gemm|cutlass|sm90|nvjet|cublas|xmma|scaled_mm|aten::mm|aten::bmm|addmm|matmul|wgmma|qlinear"),
    ("layer norm", r"layer_norm|layernorm|rms_norm|rmsnorm"),
    (
        "elementwise/copies",
        r"elementwise|vectorized|copy|memcpy|memset|fill|cat|triton_|unrolled|reduce|index",
    ),
    ("other", r".*"),
)


# ----------------------------------------------------------------------------------------------- settings
@dataclasses.dataclass
class Settings:
    device: str
    iters: int
    warmup: int
    smoke: bool
    weight_bits: int
    loop_steps: int
    schedule_dirs: tuple[Path, ...]
    profile: bool


def cuda(settings: Settings) -> bool:
    return settings.device.startswith("cuda")


def model_dtype(settings: Settings) -> torch.dtype:
    return torch.bfloat16 if cuda(settings) else torch.float32


# ----------------------------------------------------------------------------------------------- timing
def sync(settings: Settings) -> None:
    if cuda(settings):
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], settings: Settings, iters: int | None = None) -> float:
    """Median ms of ``fn`` over ``iters`` calls after ``settings.warmup`` (CUDA events; wall on the CPU)."""
    iters = settings.iters if iters is None else iters
    with torch.no_grad():
        for _ in range(settings.warmup):
            fn()
        sync(settings)
        times = []
        for _ in range(iters):
            if cuda(settings):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def categorize(name: str) -> str:
    low = name.lower()
    return next(cat for cat, rx in CATEGORIES if re.search(rx, low))


def kernel_breakdown(fn: Callable[[], object], settings: Settings, steps: int = 1) -> dict[str, Any]:
    """ms per step by category from torch.profiler: CUDA kernels on the GPU, leaf ops' self CPU time in the
    CPU smoke. Also the top kernels."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda(settings) else [])
    with torch.no_grad():
        if cuda(settings):
            fn()
            sync(settings)
        with profile(activities=acts) as prof:
            for _ in range(steps):
                fn()
            sync(settings)
    by_cat: dict[str, float] = {c: 0.0 for c, _ in CATEGORIES}
    top: list[tuple[str, float]] = []
    for e in prof.key_averages():
        if cuda(settings):
            if e.device_type != DeviceType.CUDA:
                continue
            us = float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0))
        else:
            us = float(e.self_cpu_time_total)
            if e.key.startswith(("ProfilerStep", "aten::empty", "aten::to", "aten::_to_copy")) and us == 0:
                continue
        ms = us / 1e3 / steps
        by_cat[categorize(e.key)] += ms
        top.append((e.key[:80], ms))
    top.sort(key=lambda kv: -kv[1])
    return {
        "source": "cuda kernels" if cuda(settings) else "cpu ops (self time)",
        "ms_per_step": {k: round(v, 4) for k, v in by_cat.items()},
        "total_ms": round(sum(by_cat.values()), 4),
        "top": [[k, round(v, 4)] for k, v in top[:12]],
    }


# ----------------------------------------------------------------------------------------------- memory
def weight_bytes(model: nn.Module) -> int:
    """Bytes of the distinct storages of every parameter and buffer (the resident weights)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == "meta":
            continue
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 3)


def free_memory(settings: Settings) -> None:
    gc.collect()
    if cuda(settings):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def reset_peak(settings: Settings) -> None:
    if cuda(settings):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def memory(settings: Settings) -> dict[str, float]:
    if not cuda(settings):
        return {}
    return {
        "allocated_gib": gib(torch.cuda.memory_allocated()),
        "peak_gib": gib(torch.cuda.max_memory_allocated()),
    }
