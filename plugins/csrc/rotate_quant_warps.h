// The warps-per-token activation kernels (rotate_quant_warps.cu) and the kernel options, called by
// adatsq_rotate_quant (rotate_quant.cu).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace adatsq::rq {

// ADATSQ_RQ_KERNEL, a comma-separated list of options, read once per call of adatsq_rotate_quant (so a test or
// bench_act switches it in-process): "cta" = the CTA kernel for every shape (the reference the warp kernels are
// bit-identical to; the GPU tests compare them); "warps" = the W-warps-per-token kernels of rotate_quant_warps.cu
// where they fit (opt-in until measured); with it, "w2" = two warps per token at K = 3072 and "occ3" = the
// VEC = 8 kernels at three CTAs per SM.
struct KernelOptions {
  bool cta = false, warps = false, w2 = false, occ3 = false;
};
KernelOptions kernel_options();

// Warps per token (1, 2 or 4) of the kernel that takes this shape under `opt`, or 0 (none: the option is off,
// or the shape is not one of them): rotation with m = 12 and p = 128, 256 or 1024 (K = 1536, 3072, 12288),
// groups that are runs of lanes of one row (G | 32·VEC, G % VEC == 0, VEC = p / (32·warps) elements per lane)
// or, with one warp per token, runs of whole rows (p | G, G/p | m).
int warps_per_token(const KernelOptions& opt, int K, int rotate, int m, int p, int group);

// Same arguments and result as adatsq_rotate_quant, for a shape warps_per_token admits with `warps`.
int launch_warps(const KernelOptions& opt, const void* x, int x_dtype, int64_t M, int64_t ldx, int p, int warps,
                 const int8_t* hm, int group, int qmax, int fp8, void* q, float* s_x, cudaStream_t stream);

}  // namespace adatsq::rq
