// The warp-per-token activation kernel (rotate_quant_warp.cu), called by adatsq_rotate_quant (rotate_quant.cu).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace adatsq::rq {

// Shapes it takes: rotation with m = 12 and p = 128 or 256 (K = 1536, 3072), groups that are runs of lanes of
// one row (G | p, G % (p/32) == 0) or runs of whole rows (p | G, G/p | m).
bool warp_kernel_fits(int K, int rotate, int m, int p, int group);

// Same arguments and result as adatsq_rotate_quant, for a shape warp_kernel_fits admits.
int launch_warp(const void* x, int x_dtype, int64_t M, int64_t ldx, int p, const int8_t* hm, int group, int qmax,
                int fp8, void* q, float* s_x, cudaStream_t stream);

}  // namespace adatsq::rq
