// Fused online Hadamard rotation + per-token per-group dynamic quantization (one pass over x).
//
// One CTA of 256 threads per token. Thread t owns the 8-element chunks c = t + j*256 (j < CPT), i.e.
// elements [8c, 8c+8); CPT is the smallest of {1, 2, 4, 6, 8, 16} that covers K/8 (6: K = 12288 exactly).
// The Walsh-Hadamard transform over p = 2^k is the product of k commuting butterfly stages
// (a, b) -> (a + b, a - b) at element distance h = 1, 2, ..., p/2:
//   h < 8      inside a thread's chunk (registers),
//   8..128     across lanes: the partner chunk is lane ^ (h/8) (warp shuffles),
//   h >= 256   through shared memory (two stages per barrier while two remain, then one).
// Then y[i, :] = sum_a H_m[a][i] X[a, :] (H_m^T X) from shared memory, then division by sqrt(K) (as the
// reference does), then the per-group absmax (segmented shuffle reduction + shared atomicMax), and
// q = clamp(rint(y / s), -qmax-1, qmax) with s = absmax / qmax, written as e4m3 or int8 bytes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <math.h>

#include "qlinear_kernels.h"

namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;

__device__ __forceinline__ void load8(const float* p, float (&v)[kVec]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

__device__ __forceinline__ void load8(const __half* p, float (&v)[kVec]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    v[2 * i] = f.x; v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[kVec]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x; v[2 * i + 1] = f.y;
  }
}

template <bool kFp8>
__device__ __forceinline__ uint8_t encode(float code) {
  if constexpr (kFp8) {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(code, __NV_SATFINITE, __NV_E4M3));
  } else {
    return static_cast<uint8_t>(static_cast<int8_t>(__float2int_rn(code)));
  }
}

// buf (m x p floats, row-major) <- H_m^T buf. Work items (row block of 4, 8-column chunk): (m/4)(p/8) = K/32,
// at most R per thread. hm_s[a * m + i] = H_m[a][i] as +-1.f, 16-byte aligned.
template <int R>
__device__ __forceinline__ void hm_step(float* buf, const float* hm_s, int m, int p, int tid) {
  const int chunks = p / kVec, items = (m / 4) * chunks;
  float acc[R][4][kVec];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int it = tid + r * kThreads;
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[r][k][e] = 0.f;
    if (it >= items) continue;
    const int i0 = (it / chunks) * 4, col = (it % chunks) * kVec;
#pragma unroll 2
    for (int a = 0; a < m; ++a) {
      const float4 sg = *reinterpret_cast<const float4*>(hm_s + a * m + i0);
      const float4* src = reinterpret_cast<const float4*>(buf + a * p + col);
      const float4 u0 = src[0], u1 = src[1];
      const float xs[kVec] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
      const float ss[4] = {sg.x, sg.y, sg.z, sg.w};
#pragma unroll
      for (int k = 0; k < 4; ++k)
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[r][k][e] = fmaf(ss[k], xs[e], acc[r][k][e]);
    }
  }
  __syncthreads();  // every read of buf done before it is overwritten
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int it = tid + r * kThreads;
    if (it >= items) continue;
    const int i0 = (it / chunks) * 4, col = (it % chunks) * kVec;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float4* dst = reinterpret_cast<float4*>(buf + (i0 + k) * p + col);
      dst[0] = make_float4(acc[r][k][0], acc[r][k][1], acc[r][k][2], acc[r][k][3]);
      dst[1] = make_float4(acc[r][k][4], acc[r][k][5], acc[r][k][6], acc[r][k][7]);
    }
  }
  __syncthreads();
}

template <int CPT, typename TIn, bool kFp8>
__global__ void __launch_bounds__(kThreads) rotate_quant_kernel(const TIn* __restrict__ x, int64_t ldx,
                                                                int64_t M, int K, int rotate, int m, int p,
                                                                const int8_t* __restrict__ hm, int group,
                                                                int qmax, float sqrt_k,
                                                                uint8_t* __restrict__ q,
                                                                float* __restrict__ s_x) {
  extern __shared__ float4 smem_raw[];
  float* buf = reinterpret_cast<float*>(smem_raw);          // K floats
  unsigned* gmax = reinterpret_cast<unsigned*>(buf + K);    // K/group absmax bit patterns
  float* hm_s = buf + K + (K / group + 3) / 4 * 4;               // m*m signs as +-1.f, 16-byte aligned

  const int64_t token = blockIdx.x;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int nchunks = K / kVec;
  const int ngroups = K / group;
  const TIn* xrow = x + token * ldx;

  for (int i = tid; i < ngroups; i += kThreads) gmax[i] = 0u;
  if (rotate && m > 1) {
    for (int i = tid; i < m * m; i += kThreads) hm_s[i] = static_cast<float>(hm[i]);
  }

  float v[CPT][kVec];
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    const int c = tid + j * kThreads;
    if (c < nchunks) {
      load8(xrow + static_cast<int64_t>(c) * kVec, v[j]);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[j][i] = 0.f;
    }
  }

  if (rotate) {
    // Stages h = 1, 2, 4 inside the chunk (p >= 8 is required).
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
#pragma unroll
      for (int h = 1; h < kVec; h <<= 1) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          if ((i & h) == 0) {
            const float a = v[j][i], b = v[j][i + h];
            v[j][i] = a + b;
            v[j][i + h] = a - b;
          }
        }
      }
    }
    // Stages h = 8 .. 128 across lanes: the chunk at distance h/8 sits in lane ^ (h/8).
    for (int h = kVec; h < p && h < 32 * kVec; h <<= 1) {
      const int mask = h / kVec;
      // lower lane: a + b; upper lane: a - b = fma(-1, b, a), one rounding either way (exact as the adds)
      const float sgn = (lane & mask) ? -1.f : 1.f;
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          const float other = __shfl_xor_sync(0xffffffffu, v[j][i], mask);
          v[j][i] = fmaf(sgn, v[j][i], other);
        }
      }
    }
    const bool smem_stages = p > 32 * kVec;
    if (smem_stages || m > 1) {  // through shared memory; v is reassigned at the end (dead in between)
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
        const int c = tid + j * kThreads;
        if (c < nchunks) {
          float4* dst = reinterpret_cast<float4*>(buf + c * kVec);
          dst[0] = make_float4(v[j][0], v[j][1], v[j][2], v[j][3]);
          dst[1] = make_float4(v[j][4], v[j][5], v[j][6], v[j][7]);
        }
      }
      __syncthreads();
      if (smem_stages) {
        // Stages h = 256 .. p/2, two per pass where two remain (radix 4, one barrier and one shared-memory
        // round trip for both): quad t -> segment t / (p/4), i0 = seg*p + (r / h)*4h + r % h, and
        //   (a, b, c, d) at i0 + {0, h, 2h, 3h} -> stage h: (a+b, a-b, c+d, c-d) -> stage 2h: pairs (0, 2h),
        //   (h, 3h), the same additions in the same order as two radix-2 passes (bit-identical).
        // Then a radix-2 pass if one stage is left: pair t -> i0 = seg*p + (r / h)*2h + r % h.
        // p and h are powers of two: shifts and masks instead of divisions.
        const int log_p = __ffs(p) - 1;
        int h = 32 * kVec;
        for (; 4 * h <= p; h <<= 2) {
          const int log_h = __ffs(h) - 1;
          for (int t = tid; t < K / 4; t += kThreads) {
            const int seg = t >> (log_p - 2);
            const int r = t & ((p >> 2) - 1);
            const int i0 = (seg << log_p) + ((r >> log_h) << (log_h + 2)) + (r & (h - 1));
            const float a = buf[i0], b = buf[i0 + h], c = buf[i0 + 2 * h], d = buf[i0 + 3 * h];
            const float s0 = a + b, s1 = a - b, s2 = c + d, s3 = c - d;
            buf[i0] = s0 + s2;
            buf[i0 + h] = s1 + s3;
            buf[i0 + 2 * h] = s0 - s2;
            buf[i0 + 3 * h] = s1 - s3;
          }
          __syncthreads();
        }
        for (; h < p; h <<= 1) {
          const int log_h = __ffs(h) - 1;
          for (int t = tid; t < K / 2; t += kThreads) {
            const int seg = t >> (log_p - 1);
            const int r = t & ((p >> 1) - 1);
            const int i0 = (seg << log_p) + ((r >> log_h) << (log_h + 1)) + (r & (h - 1));
            const float a = buf[i0], b = buf[i0 + h];
            buf[i0] = a + b;
            buf[i0 + h] = a - b;
          }
          __syncthreads();
        }
      }
      if (m > 1) {
        // y[i, col] = sum_a H_m[a][i] X[a, col], register-blocked: one work item = 4 rows i x 8 columns, so
        // every X[a, col..col+8) read from shared memory feeds 32 FMAs (m % 4 == 0 for every Hadamard
        // order > 2). Results stay in registers until all reads of buf are done, then overwrite it.
        hm_step<(CPT + 3) / 4>(buf, hm_s, m, p, tid);
      }
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
        const int c = tid + j * kThreads;
        float4 u0 = make_float4(0.f, 0.f, 0.f, 0.f), u1 = u0;
        if (c < nchunks) {
          const float4* src = reinterpret_cast<const float4*>(buf + c * kVec);
          u0 = src[0];
          u1 = src[1];
        }
        v[j][0] = u0.x; v[j][1] = u0.y; v[j][2] = u0.z; v[j][3] = u0.w;
        v[j][4] = u1.x; v[j][5] = u1.y; v[j][6] = u1.z; v[j][7] = u1.w;
      }
    }
    // x~ = u / sqrt(K) with u = H_m^T X H_p: the division is folded into the scale below (one per group):
    // absmax(x~) = absmax(u) / sqrt(K) exactly (rounding is monotonic), so s matches the reference bit for
    // bit and the codes use u * (1 / (sqrt(K) s)); a code can differ from rint((u/sqrt(K))/s) only when
    // the quotient lies within an ulp of a .5 boundary.
  }
  // Per-group absmax. Chunks of one group are G/8 consecutive lanes when G/8 divides 32, or whole warps
  // when 32 divides G/8; otherwise every thread publishes its own maximum.
  const int cpg = group / kVec;  // chunks per group
  __syncthreads();               // gmax zeroed, buf reads done
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    const int c = tid + j * kThreads;
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < kVec; ++i) amax = fmaxf(amax, fabsf(v[j][i]));
    if (cpg <= 32 && (32 % cpg) == 0) {
      for (int o = 1; o < cpg; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      if ((lane % cpg) == 0 && c < nchunks) atomicMax(&gmax[c / cpg], __float_as_uint(amax));
    } else if ((cpg % 32) == 0) {
      for (int o = 1; o < 32; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      if (lane == 0 && c < nchunks) atomicMax(&gmax[c / cpg], __float_as_uint(amax));
    } else if (c < nchunks) {
      atomicMax(&gmax[c / cpg], __float_as_uint(amax));
    }
  }
  __syncthreads();

  const float fq = static_cast<float>(qmax);
  const float norm = rotate ? sqrt_k : 1.f;
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    const int c = tid + j * kThreads;
    if (c < nchunks) {
      const int g = c / cpg;
      const float amax = rotate ? __fdiv_rn(__uint_as_float(gmax[g]), norm) : __uint_as_float(gmax[g]);
      const float s = amax > 1e-30f ? __fdiv_rn(amax, fq) : 1.f;
      const float inv = __frcp_rn(__fmul_rn(norm, s));
      uint8_t out[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        float code = rintf(v[j][i] * inv);  // round half to even, like torch.round
        code = fminf(fmaxf(code, -fq - 1.f), fq);
        out[i] = encode<kFp8>(code);
      }
      *reinterpret_cast<uint2*>(q + token * K + static_cast<int64_t>(c) * kVec) =
          *reinterpret_cast<const uint2*>(out);
      if (c % cpg == 0) s_x[static_cast<int64_t>(g) * M + token] = s;
    }
  }
}

template <int CPT, typename TIn, bool kFp8>
int launch_typed(const TIn* x, int64_t ldx, int64_t M, int K, int rotate, int m, int p, const int8_t* hm,
                 int group, int qmax, void* q, float* s_x, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(K) * sizeof(float) + (K / group + 3) / 4 * 4 * sizeof(unsigned) +
                      ((rotate && m > 1) ? static_cast<size_t>(m) * m * sizeof(float) : 0);
  auto kernel = rotate_quant_kernel<CPT, TIn, kFp8>;
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  const float sqrt_k = static_cast<float>(sqrt(static_cast<double>(K)));
  kernel<<<static_cast<unsigned>(M), kThreads, smem, stream>>>(x, ldx, M, K, rotate, m, p, hm, group, qmax,
                                                               sqrt_k, static_cast<uint8_t*>(q), s_x);
  return static_cast<int>(cudaGetLastError());
}

template <int CPT, typename TIn>
int launch_fmt(const TIn* x, int64_t ldx, int64_t M, int K, int rotate, int m, int p, const int8_t* hm,
               int group, int qmax, int fp8, void* q, float* s_x, cudaStream_t stream) {
  return fp8 ? launch_typed<CPT, TIn, true>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream)
             : launch_typed<CPT, TIn, false>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream);
}

template <typename TIn>
int launch_cpt(const TIn* x, int64_t ldx, int64_t M, int K, int rotate, int m, int p, const int8_t* hm,
               int group, int qmax, int fp8, void* q, float* s_x, cudaStream_t stream) {
  const int chunks = (K / kVec + kThreads - 1) / kThreads;
  if (chunks <= 1) return launch_fmt<1>(x, ldx, M, K, rotate, m, p, hm, group, qmax, fp8, q, s_x, stream);
  if (chunks <= 2) return launch_fmt<2>(x, ldx, M, K, rotate, m, p, hm, group, qmax, fp8, q, s_x, stream);
  if (chunks <= 4) return launch_fmt<4>(x, ldx, M, K, rotate, m, p, hm, group, qmax, fp8, q, s_x, stream);
  if (chunks <= 6) return launch_fmt<6>(x, ldx, M, K, rotate, m, p, hm, group, qmax, fp8, q, s_x, stream);
  if (chunks <= 8) return launch_fmt<8>(x, ldx, M, K, rotate, m, p, hm, group, qmax, fp8, q, s_x, stream);
  return launch_fmt<16>(x, ldx, M, K, rotate, m, p, hm, group, qmax, fp8, q, s_x, stream);
}

}  // namespace

extern "C" int adatsq_rotate_quant(const void* x, int x_dtype, int64_t M, int64_t K, int64_t ldx, int rotate,
                                   int m, int p, const int8_t* hm, int group, int a_bits, int fp8_codes,
                                   void* q, float* s_x, cudaStream_t stream) {
  if (K <= 0 || K > 32768 || K % kVec || group <= 0 || group % kVec || K % group || a_bits < 2 ||
      a_bits > 8 || ldx % kVec) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (rotate && (p < kVec || static_cast<int64_t>(m) * p != K || (m > 1 && hm == nullptr))) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (fp8_codes && a_bits > 4) return static_cast<int>(cudaErrorInvalidValue);  // codes > 16 not exact
  if (M == 0) return 0;
  const int qmax = (1 << (a_bits - 1)) - 1;
  const int k = static_cast<int>(K);
  switch (x_dtype) {
    case ADATSQ_F32:
      return launch_cpt(static_cast<const float*>(x), ldx, M, k, rotate, m, p, hm, group, qmax, fp8_codes, q,
                        s_x, stream);
    case ADATSQ_F16:
      return launch_cpt(static_cast<const __half*>(x), ldx, M, k, rotate, m, p, hm, group, qmax, fp8_codes,
                        q, s_x, stream);
    case ADATSQ_BF16:
      return launch_cpt(static_cast<const __nv_bfloat16*>(x), ldx, M, k, rotate, m, p, hm, group, qmax,
                        fp8_codes, q, s_x, stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}
