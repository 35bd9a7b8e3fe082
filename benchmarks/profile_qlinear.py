"""One launch of each kernel under an NVTX range, for Nsight Compute (the profile behind NOTES.md).

    ncu --clock-control none --nvtx --nvtx-include "prof/" --section SpeedOfLight \
        --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy --csv --page details \
        python benchmarks/profile_qlinear.py > ncu.csv

(the pipe utilisations and shared-memory wavefronts in benchmarks/NOTES.md come from the same script with
``--page raw`` and the sections/metrics listed there).

Kernels: our FP8 GEMM (the sm90 CUTLASS-based kernel, pre-expanded e4m3 weights; packed int4 adds the
expansion kernel), cuBLAS FP8 per-tensor and cuBLAS 1x128 block-scaled FP8 on the same shape, and the fused
rotate+quantize kernel at K = 3072, 12288 and 15360.
"""

from __future__ import annotations

import torch

from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.kernels.api import expand_weight, qgemm, quantize_activations

M, K, N, G = 4608, 3072, 12288, 128


def main() -> None:
    x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
    c4 = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    p4 = format_for_bits(4).pack(c4).cuda()
    sw = (torch.rand(N, K // G) * 0.01 + 0.001).half().cuda()
    q, sx = quantize_activations(x, 4, G, True, True)
    we = expand_weight(p4, 4, K, True)
    w8 = torch.randn(N, K, device="cuda").div(8).to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")
    x12 = torch.randn(M, 12288, device="cuda").to(torch.bfloat16)
    x15 = torch.randn(M, 15360, device="cuda").to(torch.bfloat16)
    # cuBLAS's own per-group promotion: 1 x 128 scales on both operands (float32, outer-dim-major)
    sa_blk = torch.rand(K // G, M, device="cuda").t()
    sb_blk = torch.rand(K // G, N, device="cuda")
    runs = {
        "gemm_fp8_expanded": lambda: qgemm(q, sx, we, 9, sw, None, G),
        "gemm_fp8_int4": lambda: qgemm(q, sx, p4, 4, sw, None, G),
        "cublas_fp8": lambda: torch._scaled_mm(q, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
        "cublas_fp8_1x128": lambda: torch._scaled_mm(
            q, w8.t(), scale_a=sa_blk, scale_b=sb_blk, out_dtype=torch.bfloat16
        ),
        "act_k3072": lambda: quantize_activations(x, 4, G, True, True),
        "act_k12288": lambda: quantize_activations(x12, 4, G, True, True),
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
