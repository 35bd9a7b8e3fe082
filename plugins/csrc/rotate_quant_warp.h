// The warps-per-token activation kernels (rotate_quant_warp.cu), called by adatsq_rotate_quant (rotate_quant.cu).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace adatsq::rq {

// Warps per token (1, 2 or 4) of the kernel that takes this shape, or 0 (the CTA kernel's): rotation with
// m = 12 and p = 128, 256 or 1024 (K = 1536, 3072, 12288), groups that are runs of lanes of one row
// (G | 32·VEC, G % VEC == 0, VEC = p / (32·warps) elements per lane) or, with one warp per token, runs of
// whole rows (p | G, G/p | m). ADATSQ_RQ_KERNEL=cta forces 0 (the GPU tests' bit-identity reference).
int warps_per_token(int K, int rotate, int m, int p, int group);

// Same arguments and result as adatsq_rotate_quant, for a shape warps_per_token admits with `warps`.
int launch_warps(const void* x, int x_dtype, int64_t M, int64_t ldx, int p, int warps, const int8_t* hm,
                 int group, int qmax, int fp8, void* q, float* s_x, cudaStream_t stream);

}  // namespace adatsq::rq
