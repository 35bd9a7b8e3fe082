// Weight-only quantized linear (a_bits = 16): y = x . (q_w (.) s_w)^T + b, contract 1 with unquantized
// activations. These layers (adaLN modulation, time/text embedders) see one vector per sample, so M is the
// batch and the op is a memory-bound GEMV over the packed weights: one warp per output channel n reads its
// packed row once per chunk of up to kRows tokens, multiplies each code by its float16 group scale (q . s is
// exact in float32) and by x in float32, accumulates in float32 and reduces across the warp.
//
// Two kernels, picked on the host by adatsq_weight_only_gemv:
// * wo_gemv_vec_kernel when K % 32 == 0, group % 32 == 0, x and its row stride 16-byte aligned, w 16-byte
//   aligned (4-byte for int3), ldx >= K and M ldx, N K, M N < 2^31 (32-bit indices). Lane l takes the chunks
//   c = l, l + 32, ... of 32 codes of the row (kW = 3 / 4 / 8 words of 32 bits for int3 / int4 / int8, one
//   scale per chunk) and issues the weight and scale loads of kUnroll chunks before decoding any, so a row of
//   K <= 4096 is in flight at once; x comes 8 elements per 16-byte load. Codes become q . s by an fma on
//   their bits in a float mantissa (Dequant), not int -> float conversions. Templated on the weight format,
//   the x dtype and the tokens per block kR = 1, 2, 4, 8 (M = 1, 2, 3..4, more).
// * wo_gemv_generic_kernel otherwise (K % 8 == 0, group % 8 == 0): 8 codes per lane per step, byte loads.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "qlinear_kernels.h"

namespace {

constexpr int kWarps = 8;   // output channels per block
constexpr int kRows = 8;    // tokens per pass over the weights
constexpr int kUnroll = 4;  // chunks of 32 codes loaded per lane before decoding (vectorized kernel)

// ------------------------------------------------------------------ generic kernel

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

__global__ void wo_gemv_generic_kernel(const void* __restrict__ x, int x_dtype, int64_t ldx,
                                       const uint8_t* __restrict__ w, int fmt, int64_t row_bytes,
                                       const __half* __restrict__ s_w, const float* __restrict__ bias,
                                       void* __restrict__ y, int y_dtype, int64_t M, int64_t N, int64_t K,
                                       int group) {
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

// ------------------------------------------------------------------ vectorized kernel

// 32-bit words per chunk of 32 codes.
template <int kFmt>
__host__ __device__ constexpr int chunk_words() {
    return kFmt == ADATSQ_W_INT3 ? 3 : kFmt == ADATSQ_W_INT4 ? 4 : 8;
}

template <int kW>
__device__ __forceinline__ void load_words(const uint32_t* p, uint32_t (&v)[kW]) {
    if constexpr (kW == 3) {
#pragma unroll
        for (int i = 0; i < 3; ++i) v[i] = __ldg(p + i);
    } else {
#pragma unroll
        for (int h = 0; h < kW / 4; ++h) {
            const uint4 q = __ldg(reinterpret_cast<const uint4*>(p) + h);
            v[4 * h] = q.x, v[4 * h + 1] = q.y, v[4 * h + 2] = q.z, v[4 * h + 3] = q.w;
        }
    }
}

// x[0..8) in float32 from two (float) or one (f16 / bf16) 16-byte loads. bf16 -> float32 is the bf16 bits
// in the upper half (what __bfloat1622float2 computes, in one instruction per element).
__device__ __forceinline__ void load_x8(const float* p, float out[8]) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}
__device__ __forceinline__ float2 pair_to_float2(uint32_t v, const __half*) {
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
}
__device__ __forceinline__ float2 pair_to_float2(uint32_t v, const __nv_bfloat16*) {
    return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xFFFF0000u));
}
template <typename XT>
__device__ __forceinline__ void load_x8(const XT* p, float out[8]) {
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t v[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = pair_to_float2(v[i], p);
        out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
}

// Code -> q . s without int -> float conversions. The offset code u = q + off (int3: the field, off 4;
// int4: nibble ^ 8, off 8; int8: byte ^ 0x80, off 128) goes to mantissa bits [p, p + b) of 1.0f,
// f = 1 + u 2^(p-23), and fma(f, S_p, C_p) with S_p = s 2^(23-p), C_p = -(2^(23-p) + off) s is (u - off) s.
// For the p used (int3 9..18, int4 8..16, int8 8) S_p, C_p (<= 24 significant bits) and (u - off) s are
// exact in float32, so this is float(q) * s bit for bit (finite s).
template <int kBits, int kP>
__device__ __forceinline__ float dq(uint32_t word, float S, float C) {
    // (word & mask) | 1.0f in one lop3 (ptxas splits an and / or of two immediates into two)
    uint32_t f;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(f) : "r"(word), "n"(((1u << kBits) - 1) << kP), "r"(0x3F800000u));
    return fmaf(__uint_as_float(f), S, C);
}

template <int kFmt>
struct Dequant {
    // mantissa positions p of the codes: int3 {9, 12, 15, 18}, int4 {8, 12, 16}, int8 {8}
    static constexpr int kP = kFmt == ADATSQ_W_INT3 ? 4 : kFmt == ADATSQ_W_INT4 ? 3 : 1;
    static constexpr int kOff = kFmt == ADATSQ_W_INT3 ? 4 : kFmt == ADATSQ_W_INT4 ? 8 : 128;
    __host__ __device__ static constexpr int pos(int i) { return kFmt == ADATSQ_W_INT3 ? 9 + 3 * i : 8 + 4 * i; }
    float S[kP], C[kP];
    __device__ __forceinline__ explicit Dequant(float s) {
#pragma unroll
        for (int i = 0; i < kP; ++i) {
            S[i] = s * static_cast<float>(1 << (23 - pos(i)));
            C[i] = s * -static_cast<float>((1 << (23 - pos(i))) + kOff);
        }
    }
    // q . s of codes 8j .. 8j + 7 of the chunk in words v (little-endian, formats of plugins/formats.py).
    template <int kW>
    __device__ __forceinline__ void sub(const uint32_t (&v)[kW], int j, float out[8]) const {
        if constexpr (kFmt == ADATSQ_W_INT4) {
            // code 8j + i: bits [4i, 4i + 4) of word j; codes 0, 1 of m << 8 and 5..7 of m >> 12 at bits 8..16
            const uint32_t m = v[j] ^ 0x88888888u, lo = m << 8, hi = m >> 12;
            out[0] = dq<4, 8>(lo, S[0], C[0]), out[1] = dq<4, 12>(lo, S[1], C[1]);
            out[2] = dq<4, 8>(m, S[0], C[0]), out[3] = dq<4, 12>(m, S[1], C[1]), out[4] = dq<4, 16>(m, S[2], C[2]);
            out[5] = dq<4, 8>(hi, S[0], C[0]), out[6] = dq<4, 12>(hi, S[1], C[1]), out[7] = dq<4, 16>(hi, S[2], C[2]);
        } else if constexpr (kFmt == ADATSQ_W_INT3) {
            // 24-bit triplet j of the 12 bytes, code 8j + i at its bits [3i, 3i + 3); codes 0..3 of t << 9
            // and 4..7 of t >> 3 at bits 9, 12, 15, 18
            const uint32_t t = j == 0   ? v[0] & 0xFFFFFFu
                               : j == 1 ? (v[0] >> 24) | ((v[1] & 0xFFFFu) << 8)
                               : j == 2 ? (v[1] >> 16) | ((v[2] & 0xFFu) << 16)
                                        : v[2] >> 8;
            const uint32_t a = t << 9, b = t >> 3;
            out[0] = dq<3, 9>(a, S[0], C[0]), out[1] = dq<3, 12>(a, S[1], C[1]);
            out[2] = dq<3, 15>(a, S[2], C[2]), out[3] = dq<3, 18>(a, S[3], C[3]);
            out[4] = dq<3, 9>(b, S[0], C[0]), out[5] = dq<3, 12>(b, S[1], C[1]);
            out[6] = dq<3, 15>(b, S[2], C[2]), out[7] = dq<3, 18>(b, S[3], C[3]);
        } else {
            // code 8j + i: signed byte i % 4 of word 2j + i / 4, moved by prmt to bits [8, 16) of 1.0f
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const uint32_t u = v[2 * j + i / 4] ^ 0x80808080u;
                out[i] = fmaf(__uint_as_float(__byte_perm(u, 0x3F800000u, 0x7604u | ((i % 4) << 4))), S[0], C[0]);
            }
        }
    }
};

// kR tokens per block (1, 2, 4 or kRows, from M on the host): registers and instructions for kR rows only.
// 32-bit indices: the host takes this kernel only where M ldx, N K and M N are below 2^31.
template <int kFmt, typename XT, int kR>
__global__ void __launch_bounds__(kWarps * 32)
    wo_gemv_vec_kernel(const XT* __restrict__ x, unsigned ldx, const uint32_t* __restrict__ w,
                       const __half* __restrict__ s_w, const float* __restrict__ bias, void* __restrict__ y,
                       int y_dtype, unsigned M, unsigned N, unsigned K, unsigned chunks_per_group) {
    constexpr int kW = chunk_words<kFmt>();
    const unsigned lane = threadIdx.x & 31;
    const unsigned n = blockIdx.x * kWarps + (threadIdx.x >> 5);
    const unsigned m0 = blockIdx.y * kR;
    if (n >= N) return;
    const int rows = M - m0 < kR ? static_cast<int>(M - m0) : kR;
    const unsigned chunks = K / 32;
    const uint32_t* wrow = w + n * chunks * kW;  // kW words per chunk
    const __half* srow = s_w + n * (chunks / chunks_per_group);
    const XT* xrow = x + m0 * ldx;
    float acc[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) acc[r] = 0.f;
    for (unsigned c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
        // all weight and scale loads of the kUnroll chunks c = c0 + 32u first (the scale index of a chunk
        // past the row clamped to the last: the 4 divisions share one reciprocal) ...
        uint32_t wv[kUnroll][kW];
        __half sh[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const unsigned c = c0 + 32 * u;
            if (c < chunks) load_words<kW>(wrow + c * kW, wv[u]);
            sh[u] = __ldg(srow + (c < chunks ? c : chunks - 1) / chunks_per_group);
        }
        // ... then decode and accumulate; x of chunk c, token m0 + r at x + (m0 + r) ldx + 32c
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const unsigned c = c0 + 32 * u;
            if (c < chunks) {
                const Dequant<kFmt> dqs(__half2float(sh[u]));
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    float wq[8];
                    dqs.sub(wv[u], j, wq);
#pragma unroll
                    for (int r = 0; r < kR; ++r) {
                        if (r < rows) {
                            float xv[8];
                            load_x8(xrow + (r * ldx + 32 * c + 8 * j), xv);
#pragma unroll
                            for (int i = 0; i < 8; ++i) acc[r] = fmaf(xv[i], wq[i], acc[r]);
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
    }
    if (lane == 0) {
        const float b = bias != nullptr ? bias[n] : 0.f;
#pragma unroll
        for (int r = 0; r < kR; ++r) {
            if (r >= rows) break;
            const unsigned i = (m0 + r) * N + n;
            if (y_dtype == ADATSQ_F32) static_cast<float*>(y)[i] = acc[r] + b;
            else static_cast<__nv_bfloat16*>(y)[i] = __float2bfloat16(acc[r] + b);
        }
    }
}

template <int kFmt, typename XT>
void launch_vec(const void* x, int64_t ldx, const uint8_t* w, const __half* s_w, const float* bias, void* y,
                int y_dtype, int64_t M, int64_t N, int64_t K, int group, cudaStream_t stream) {
    const XT* xt = static_cast<const XT*>(x);
    const uint32_t* w32 = reinterpret_cast<const uint32_t*>(w);
    const unsigned ld = static_cast<unsigned>(ldx), m = static_cast<unsigned>(M), n = static_cast<unsigned>(N);
    const unsigned k = static_cast<unsigned>(K), g = static_cast<unsigned>(group / 32);
    const int rows = M == 1 ? 1 : M == 2 ? 2 : M <= 4 ? 4 : kRows;
    const dim3 grid(static_cast<unsigned>((N + kWarps - 1) / kWarps), static_cast<unsigned>((M + rows - 1) / rows));
    constexpr int kThreads = kWarps * 32;
    if (rows == 1)
        wo_gemv_vec_kernel<kFmt, XT, 1><<<grid, kThreads, 0, stream>>>(xt, ld, w32, s_w, bias, y, y_dtype, m, n, k, g);
    else if (rows == 2)
        wo_gemv_vec_kernel<kFmt, XT, 2><<<grid, kThreads, 0, stream>>>(xt, ld, w32, s_w, bias, y, y_dtype, m, n, k, g);
    else if (rows == 4)
        wo_gemv_vec_kernel<kFmt, XT, 4><<<grid, kThreads, 0, stream>>>(xt, ld, w32, s_w, bias, y, y_dtype, m, n, k, g);
    else
        wo_gemv_vec_kernel<kFmt, XT, kRows>
            <<<grid, kThreads, 0, stream>>>(xt, ld, w32, s_w, bias, y, y_dtype, m, n, k, g);
}

template <int kFmt>
void launch_vec(const void* x, int x_dtype, int64_t ldx, const uint8_t* w, const __half* s_w, const float* bias,
                void* y, int y_dtype, int64_t M, int64_t N, int64_t K, int group, cudaStream_t stream) {
    if (x_dtype == ADATSQ_F32) launch_vec<kFmt, float>(x, ldx, w, s_w, bias, y, y_dtype, M, N, K, group, stream);
    else if (x_dtype == ADATSQ_F16) launch_vec<kFmt, __half>(x, ldx, w, s_w, bias, y, y_dtype, M, N, K, group, stream);
    else launch_vec<kFmt, __nv_bfloat16>(x, ldx, w, s_w, bias, y, y_dtype, M, N, K, group, stream);
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
    const __half* s_w = reinterpret_cast<const __half*>(s_w_f16);
    // rows of whole 32-code chunks (row_bytes a multiple of 12 / 16 / 32), 16-byte vectors of x, 32-bit indices
    const int64_t x_bytes = x_dtype == ADATSQ_F32 ? 4 : 2;
    const uintptr_t w_align = w_format == ADATSQ_W_INT3 ? 4 : 16;
    const int64_t kMax32 = INT32_MAX;
    const bool vec = K % 32 == 0 && group % 32 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                     (ldx * x_bytes) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % w_align == 0 && ldx >= K &&
                     M * ldx <= kMax32 && N * K <= kMax32 && M * N <= kMax32;
    if (!vec)
        wo_gemv_generic_kernel<<<grid, kWarps * 32, 0, stream>>>(x, x_dtype, ldx, w, w_format, row_bytes, s_w, bias,
                                                                 y, y_dtype, M, N, K, group);
    else if (w_format == ADATSQ_W_INT3)
        launch_vec<ADATSQ_W_INT3>(x, x_dtype, ldx, w, s_w, bias, y, y_dtype, M, N, K, group, stream);
    else if (w_format == ADATSQ_W_INT4)
        launch_vec<ADATSQ_W_INT4>(x, x_dtype, ldx, w, s_w, bias, y, y_dtype, M, N, K, group, stream);
    else
        launch_vec<ADATSQ_W_INT8>(x, x_dtype, ldx, w, s_w, bias, y, y_dtype, M, N, K, group, stream);
    return static_cast<int>(cudaGetLastError());
}
