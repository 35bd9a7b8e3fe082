"""One launch of each kernel under an NVTX range, for Nsight Compute (the profile behind NOTES.md).

    ncu --clock-control none --nvtx --nvtx-include "prof/" --section SpeedOfLight \
        --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy --csv --page details \
        python benchmarks/profile_qlinear.py > ncu.csv

Kernels: our FP8 GEMM (pre-expanded e4m3 weights, packed int4, int3 planes) with the configs the final sweep
chose, cuBLAS FP8 per-tensor on the same shape, and the fused rotate+quantize kernel at K = 3072 and 15360.
"""

from __future__ import annotations

import torch

from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.kernels import triton_qgemm as tq
from adatsq.plugins.kernels.api import expand_weight, qgemm, quantize_activations

M, K, N, G = 4608, 3072, 12288, 128


def main() -> None:
    tq.TUNED[(9, True)] = tq.TileConfig(128, 128, 8, 3, False, True)
    tq.TUNED[(4, True)] = tq.TileConfig(128, 64, 4, 4, True, False)
    tq.TUNED[(3, True)] = tq.TileConfig(256, 64, 8, 4, True, False)
    x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
    c4 = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    c3 = torch.randint(-4, 4, (N, K), dtype=torch.int8)
    p4, p3 = format_for_bits(4).pack(c4).cuda(), format_for_bits(3).pack(c3).cuda()
    sw = (torch.rand(N, K // G) * 0.01 + 0.001).half().cuda()
    q, sx = quantize_activations(x, 4, G, True, True)
    we = expand_weight(p4, 4, K, True)
    w8 = torch.randn(N, K, device="cuda").div(8).to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")
    x15 = torch.randn(M, 15360, device="cuda").to(torch.bfloat16)
    runs = {
        "gemm_fp8_expanded": lambda: qgemm(q, sx, we, 9, sw, None, G),
        "gemm_fp8_int4": lambda: qgemm(q, sx, p4, 4, sw, None, G),
        "gemm_fp8_int3": lambda: qgemm(q, sx, p3, 3, sw, None, G),
        "cublas_fp8": lambda: torch._scaled_mm(q, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
        "act_k3072": lambda: quantize_activations(x, 4, G, True, True),
        "act_k15360": lambda: quantize_activations(x15, 4, G, True, True),
    }
    for fn in runs.values():  # compile, build caches, warm up outside the profiled ranges
        fn()
    torch.cuda.synchronize()
    for name, fn in runs.items():  # kernels appear in this order in the ncu report
        torch.cuda.nvtx.range_push("prof")  # one range name: ncu --nvtx-include "prof/"
        print("profiling", name, flush=True)
        fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
    print("done")


if __name__ == "__main__":
    main()
