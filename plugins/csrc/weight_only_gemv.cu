// Weight-only quantized linear (a_bits = 16): y = x . (q_w (.) s_w)^T + b, contract 1 with unquantized
// activations. These layers (adaLN modulation, time/text embedders) see one vector per sample, so M is the
// batch and the op is a memory-bound GEMV over the packed weights: one warp per output channel n reads its
// packed row once per chunk of up to kRows tokens, decodes 8 codes per lane per step, multiplies by the
// float16 group scale (q . s is exact in float32) and by x in float32, then reduces across the warp.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "qlinear_kernels.h"

namespace {

constexpr int kWarps = 8;   // output channels per block
constexpr int kRows = 8;    // tokens per pass over the weights

__device__ __forceinline__ float load_x(const void* x, int dtype, int64_t i) {
    if (dtype == ADATSQ_F32) return static_cast<const float*>(x)[i];
    if (dtype == ADATSQ_F16) return __half2float(static_cast<const __half*>(x)[i]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(x)[i]);
}

// The 8 codes [8c, 8c + 8) of one packed row (formats of plugins/formats.py).
__device__ __forceinline__ void decode8(const uint8_t* row, int fmt, int64_t c, float out[8]) {
    if (fmt == ADATSQ_W_INT4) {
        const uint8_t* b = row + 4 * c;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            int lo = b[i] & 0xF, hi = b[i] >> 4;
            out[2 * i] = static_cast<float>(lo >= 8 ? lo - 16 : lo);
            out[2 * i + 1] = static_cast<float>(hi >= 8 ? hi - 16 : hi);
        }
    } else if (fmt == ADATSQ_W_INT3) {
        const uint8_t* b = row + 3 * c;
        uint32_t word = b[0] | (uint32_t(b[1]) << 8) | (uint32_t(b[2]) << 16);
#pragma unroll
        for (int i = 0; i < 8; ++i) out[i] = static_cast<float>(static_cast<int>((word >> (3 * i)) & 7) - 4);
    } else {  // ADATSQ_W_INT8
        const int8_t* b = reinterpret_cast<const int8_t*>(row) + 8 * c;
#pragma unroll
        for (int i = 0; i < 8; ++i) out[i] = static_cast<float>(b[i]);
    }
}

__global__ void wo_gemv_kernel(const void* __restrict__ x, int x_dtype, int64_t ldx, const uint8_t* __restrict__ w,
                               int fmt, int64_t row_bytes, const __half* __restrict__ s_w,
                               const float* __restrict__ bias, void* __restrict__ y, int y_dtype, int64_t M,
                               int64_t N, int64_t K, int group) {
    const int lane = threadIdx.x & 31;
    const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
    const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kRows;
    if (n >= N) return;
    const int rows = static_cast<int>(M - m0 < kRows ? M - m0 : kRows);
    const uint8_t* wrow = w + n * row_bytes;
    const __half* srow = s_w + n * (K / group);
    float acc[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r] = 0.f;
    for (int64_t c = lane; c < K / 8; c += 32) {
        float wq[8];
        decode8(wrow, fmt, c, wq);
        const float s = __half2float(srow[(8 * c) / group]);
#pragma unroll
        for (int i = 0; i < 8; ++i) wq[i] *= s;  // q . s_w: exact in float32
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            if (r < rows) {
                const int64_t base = (m0 + r) * ldx + 8 * c;
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[r] = fmaf(load_x(x, x_dtype, base + i), wq[i], acc[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
    }
    if (lane == 0) {
        const float b = bias != nullptr ? bias[n] : 0.f;
        for (int r = 0; r < rows; ++r) {
            const int64_t i = (m0 + r) * N + n;
            if (y_dtype == ADATSQ_F32) static_cast<float*>(y)[i] = acc[r] + b;
            else static_cast<__nv_bfloat16*>(y)[i] = __float2bfloat16(acc[r] + b);
        }
    }
}

}  // namespace

extern "C" int adatsq_weight_only_gemv(const void* x, int x_dtype, int64_t M, int64_t K, int64_t ldx,
                                       const uint8_t* w, int w_format, const uint16_t* s_w_f16,
                                       const float* bias, void* y, int y_dtype, int64_t N, int group,
                                       cudaStream_t stream) {
    int64_t row_bytes;
    if (w_format == ADATSQ_W_INT4) row_bytes = K / 2;
    else if (w_format == ADATSQ_W_INT3) row_bytes = 3 * K / 8;
    else if (w_format == ADATSQ_W_INT8) row_bytes = K;
    else return cudaErrorInvalidValue;
    if (M <= 0 || N <= 0 || K <= 0 || K % 8 || group <= 0 || group % 8 || K % group) return cudaErrorInvalidValue;
    if (x_dtype < ADATSQ_F32 || x_dtype > ADATSQ_BF16 || (y_dtype != ADATSQ_F32 && y_dtype != ADATSQ_BF16))
        return cudaErrorInvalidValue;
    dim3 grid(static_cast<unsigned>((N + kWarps - 1) / kWarps), static_cast<unsigned>((M + kRows - 1) / kRows));
    if (grid.y > 65535) return cudaErrorInvalidValue;
    wo_gemv_kernel<<<grid, kWarps * 32, 0, stream>>>(x, x_dtype, ldx, w, w_format, row_bytes,
                                                      reinterpret_cast<const __half*>(s_w_f16), bias, y, y_dtype,
                                                      M, N, K, group);
    return static_cast<int>(cudaGetLastError());
}
