// Quantized GEMM in CUDA C++ on int8 tensor cores (mma.sync.m16n8k32.s32.s8.s8), the path a TensorRT
// plugin calls without Python (the Triton wgmma kernel in plugins/kernels is the fast torch path).
//
// y[m, n] = sum_g s_x[g, m] s_w[n, g] (sum_{k in g} q_x[m, k] q_w[n, k]) + b[n]
//
// CTA tile 128 x 128, K-step 64, 8 warps as 2 (M) x 4 (N), each warp 64 x 32 = 4 x 4 mma tiles. Integer
// partial sums of one group accumulate exactly in s32 registers; at each group boundary they are
// promoted: acc_f += float(acc_i) * s_x * s_w, acc_i = 0. Weights are read in their packed format
// (int3 / int4 / int8) and expanded to int8 while being staged into shared memory; the next K-step's
// global loads are issued before the current step's mma (register double buffering).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "qlinear_kernels.h"

namespace {

constexpr int kBM = 128, kBN = 128, kBK = 64, kThreads = 256;
constexpr int kLd = kBK + 16;  // padded shared row (bytes): 4-byte fragment reads spread over banks

struct Raw {
  uint4 a0, a1;   // 32 activation bytes
  uint4 b0, b1;   // up to 32 weight bytes (int8), 16 (int4) or 12 (int3)
};

__device__ __forceinline__ uint32_t pack4(int c0, int c1, int c2, int c3) {
  return (c0 & 0xFF) | ((c1 & 0xFF) << 8) | ((c2 & 0xFF) << 16) | (static_cast<uint32_t>(c3 & 0xFF) << 24);
}

template <int kFmt>
__device__ __forceinline__ void load_raw(Raw& r, const int8_t* q, const uint8_t* w, int64_t M, int64_t N,
                                         int64_t K, int64_t m0, int64_t n0, int64_t k0, int tid) {
  const int row = tid >> 1, half = tid & 1;
  const int64_t m = m0 + row, n = n0 + row;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  if (m < M) {
    const uint4* src = reinterpret_cast<const uint4*>(q + m * K + k0 + half * 32);
    r.a0 = src[0];
    r.a1 = src[1];
  } else {
    r.a0 = zero;
    r.a1 = zero;
  }
  r.b0 = zero;
  r.b1 = zero;
  if (n < N) {
    if constexpr (kFmt == ADATSQ_W_INT8) {
      const uint4* src = reinterpret_cast<const uint4*>(w + n * K + k0 + half * 32);
      r.b0 = src[0];
      r.b1 = src[1];
    } else if constexpr (kFmt == ADATSQ_W_INT4) {
      r.b0 = *reinterpret_cast<const uint4*>(w + n * (K / 2) + k0 / 2 + half * 16);
    } else {
      const uint32_t* src = reinterpret_cast<const uint32_t*>(w + n * (K / 8 * 3) + k0 / 8 * 3 + half * 12);
      r.b0 = make_uint4(src[0], src[1], src[2], 0);
    }
  }
}

// Writes the 32 activation bytes and the 32 expanded weight codes of this thread into shared memory.
template <int kFmt>
__device__ __forceinline__ void store_raw(const Raw& r, int8_t* As, int8_t* Bs, int tid) {
  const int row = tid >> 1, half = tid & 1;
  uint4* a = reinterpret_cast<uint4*>(As + row * kLd + half * 32);
  a[0] = r.a0;
  a[1] = r.a1;
  uint4* b = reinterpret_cast<uint4*>(Bs + row * kLd + half * 32);
  if constexpr (kFmt == ADATSQ_W_INT8) {
    b[0] = r.b0;
    b[1] = r.b1;
  } else if constexpr (kFmt == ADATSQ_W_INT4) {
    // byte j: codes 2j (low nibble), 2j+1 (high nibble); v = (u ^ 8) - 8.
    const uint32_t words[4] = {r.b0.x, r.b0.y, r.b0.z, r.b0.w};
    uint32_t out[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int c[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) c[j] = static_cast<int>(((words[i] >> (4 * j)) & 0xFu) ^ 8u) - 8;
      out[2 * i] = pack4(c[0], c[1], c[2], c[3]);
      out[2 * i + 1] = pack4(c[4], c[5], c[6], c[7]);
    }
    b[0] = make_uint4(out[0], out[1], out[2], out[3]);
    b[1] = make_uint4(out[4], out[5], out[6], out[7]);
  } else {
    // 12 bytes = 4 little-endian 24-bit words; code 8w+i = ((word >> 3i) & 7) - 4.
    const uint32_t x0 = r.b0.x, x1 = r.b0.y, x2 = r.b0.z;
    const uint32_t wd[4] = {x0 & 0xFFFFFFu, (x0 >> 24) | ((x1 & 0xFFFFu) << 8), (x1 >> 16) | ((x2 & 0xFFu) << 16),
                            x2 >> 8};
    uint32_t out[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int c[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) c[j] = static_cast<int>((wd[i] >> (3 * j)) & 7u) - 4;
      out[2 * i] = pack4(c[0], c[1], c[2], c[3]);
      out[2 * i + 1] = pack4(c[4], c[5], c[6], c[7]);
    }
    b[0] = make_uint4(out[0], out[1], out[2], out[3]);
    b[1] = make_uint4(out[4], out[5], out[6], out[7]);
  }
}

__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int kFmt, typename TOut>
__global__ void __launch_bounds__(kThreads) qgemm_kernel(const int8_t* __restrict__ q,
                                                         const float* __restrict__ s_x,
                                                         const uint8_t* __restrict__ w,
                                                         const __half* __restrict__ s_w,
                                                         const float* __restrict__ bias, TOut* __restrict__ y,
                                                         int64_t M, int64_t N, int64_t K, int group) {
  __shared__ __align__(16) int8_t As[kBM * kLd];
  __shared__ __align__(16) int8_t Bs[kBN * kLd];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;  // 2 x 4 warps
  const int gid = lane >> 2, tig = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBM, n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  const int ngroups = static_cast<int>(K / group);
  const int steps_per_group = group / kBK;
  const int nsteps = static_cast<int>(K / kBK);

  float accf[4][4][4];
  int acci[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        accf[i][j][r] = 0.f;
        acci[i][j][r] = 0;
      }

  Raw raw;
  load_raw<kFmt>(raw, q, w, M, N, K, m0, n0, 0, tid);
  for (int step = 0; step < nsteps; ++step) {
    store_raw<kFmt>(raw, As, Bs, tid);
    __syncthreads();
    if (step + 1 < nsteps) load_raw<kFmt>(raw, q, w, M, N, K, m0, n0, static_cast<int64_t>(step + 1) * kBK, tid);
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 32) {
      uint32_t af[4][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int8_t* base = As + (wm * 64 + i * 16 + gid) * kLd + kk + tig * 4;
        af[i][0] = *reinterpret_cast<const uint32_t*>(base);
        af[i][1] = *reinterpret_cast<const uint32_t*>(base + 8 * kLd);
        af[i][2] = *reinterpret_cast<const uint32_t*>(base + 16);
        af[i][3] = *reinterpret_cast<const uint32_t*>(base + 8 * kLd + 16);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int8_t* base = Bs + (wn * 32 + j * 8 + gid) * kLd + kk + tig * 4;
        bf[j][0] = *reinterpret_cast<const uint32_t*>(base);
        bf[j][1] = *reinterpret_cast<const uint32_t*>(base + 16);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_s8(acci[i][j], af[i], bf[j]);
    }
    if ((step + 1) % steps_per_group == 0) {
      // Promotion at the group boundary: acc_f += acc_i * s_x[g, m] * s_w[n, g].
      const int g = (step + 1) / steps_per_group - 1;
      float sx[4][2], sw[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t m = m0 + wm * 64 + i * 16 + gid + 8 * h;
          sx[i][h] = m < M ? s_x[static_cast<int64_t>(g) * M + m] : 0.f;
        }
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t n = n0 + wn * 32 + j * 8 + tig * 2 + h;
          sw[j][h] = n < N ? __half2float(s_w[n * ngroups + g]) : 0.f;
        }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            accf[i][j][r] = fmaf(static_cast<float>(acci[i][j][r]), sx[i][r >> 1] * sw[j][r & 1], accf[i][j][r]);
            acci[i][j][r] = 0;
          }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t m = m0 + wm * 64 + i * 16 + gid + 8 * h;
        const int64_t n = n0 + wn * 32 + j * 8 + tig * 2;
        if (m >= M) continue;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          if (n + e >= N) continue;
          float v = accf[i][j][2 * h + e];
          if (bias != nullptr) v += bias[n + e];
          if constexpr (sizeof(TOut) == 4) {
            y[m * N + n + e] = v;
          } else {
            y[m * N + n + e] = __float2bfloat16_rn(v);
          }
        }
      }
}

template <int kFmt>
int launch(const int8_t* q, const float* s_x, const uint8_t* w, const __half* s_w, const float* bias, void* y,
           int y_dtype, int64_t M, int64_t N, int64_t K, int group, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((N + kBN - 1) / kBN), static_cast<unsigned>((M + kBM - 1) / kBM));
  if (y_dtype == ADATSQ_F32) {
    qgemm_kernel<kFmt, float><<<grid, kThreads, 0, stream>>>(q, s_x, w, s_w, bias, static_cast<float*>(y), M,
                                                             N, K, group);
  } else if (y_dtype == ADATSQ_BF16) {
    qgemm_kernel<kFmt, __nv_bfloat16><<<grid, kThreads, 0, stream>>>(
        q, s_x, w, s_w, bias, static_cast<__nv_bfloat16*>(y), M, N, K, group);
  } else {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" int adatsq_qgemm(const void* q, int fp8_codes, const float* s_x, const uint8_t* w, int w_format,
                            const uint16_t* s_w_f16, const float* bias, void* y, int y_dtype, int64_t M,
                            int64_t N, int64_t K, int group, cudaStream_t stream) {
  // This path takes int8 activation codes (adatsq_rotate_quant with fp8_codes = 0) and integer weights.
  if (fp8_codes || group <= 0 || group % kBK || K % group) return static_cast<int>(cudaErrorInvalidValue);
  if (M == 0 || N == 0) return 0;
  const int8_t* qa = static_cast<const int8_t*>(q);
  const __half* sw = reinterpret_cast<const __half*>(s_w_f16);
  switch (w_format) {
    case ADATSQ_W_INT3: return launch<ADATSQ_W_INT3>(qa, s_x, w, sw, bias, y, y_dtype, M, N, K, group, stream);
    case ADATSQ_W_INT4: return launch<ADATSQ_W_INT4>(qa, s_x, w, sw, bias, y, y_dtype, M, N, K, group, stream);
    case ADATSQ_W_INT8: return launch<ADATSQ_W_INT8>(qa, s_x, w, sw, bias, y, y_dtype, M, N, K, group, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
