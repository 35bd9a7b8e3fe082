// Device helpers shared by the activation kernels (rotate_quant.cu, rotate_quant_warp.cu, rotate_quant_warps.cu):
// vector loads of 4 or 8 elements to float, the in-lane and across-lane butterfly stages of the Walsh-Hadamard
// transform, the H_m step in registers, the warp kernels' group maxima, the group scale and the code encoding.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include <type_traits>

namespace adatsq::rq {

constexpr int kVec = 8;

__device__ __forceinline__ float2 to_float2(__half2 h) { return __half22float2(h); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 h) { return __bfloat1622float2(h); }

// v = N consecutive inputs (N = 4 or 8, 16-byte aligned rows) as float, with one or two vector loads.
template <int N, typename TIn>
__device__ __forceinline__ void load_vec(const TIn* p, float (&v)[N]) {
  static_assert(N == 4 || N == 8, "4 or 8 elements");
  if constexpr (std::is_same_v<TIn, float>) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const float4 a = reinterpret_cast<const float4*>(p)[i];
      v[4 * i] = a.x; v[4 * i + 1] = a.y; v[4 * i + 2] = a.z; v[4 * i + 3] = a.w;
    }
  } else {  // __half or __nv_bfloat16: N/2 pairs in one 8- or 16-byte load
    using Pair = std::conditional_t<std::is_same_v<TIn, __half>, __half2, __nv_bfloat162>;
    using Word = std::conditional_t<N == 8, uint4, uint2>;
    const Word u = *reinterpret_cast<const Word*>(p);
    const Pair* h = reinterpret_cast<const Pair*>(&u);
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const float2 f = to_float2(h[i]);
      v[2 * i] = f.x; v[2 * i + 1] = f.y;
    }
  }
}

// The butterfly stages h = 1, 2, .., N/2 inside one thread's N consecutive elements: (a, b) -> (a + b, a - b).
template <int N>
__device__ __forceinline__ void butterflies_in_lane(float (&v)[N]) {
#pragma unroll
  for (int h = 1; h < N; h <<= 1) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if ((i & h) == 0) {
        const float a = v[i], b = v[i + h];
        v[i] = a + b;
        v[i + h] = a - b;
      }
    }
  }
}

// One butterfly stage across lanes for every value a thread holds: the partner is lane ^ mask; the lower lane
// keeps a + b, the upper a - b = fma(-1, b, a) (one rounding either way, exactly as the adds).
template <int R, int N>
__device__ __forceinline__ void butterfly_across_lanes(float (&v)[R][N], int mask, int lane) {
  const float sgn = (lane & mask) ? -1.f : 1.f;
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float other = __shfl_xor_sync(0xffffffffu, v[r][i], mask);
      v[r][i] = fmaf(sgn, v[r][i], other);
    }
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

// s = (absmax(u) / norm) / qmax (1 where that is <= 1e-30) and the code factor inv = 1 / (norm·s). norm is
// sqrt(K) where the rotation's 1/sqrt(K) is folded in here (absmax(u/sqrt(K)) = absmax(u)/sqrt(K) exactly, since
// rounding is monotonic, so s matches the reference bit for bit), 1 without rotation (x/1 is exact).
__device__ __forceinline__ void group_scale(float amax_u, float norm, float fq, float& s, float& inv) {
  const float amax = __fdiv_rn(amax_u, norm);
  s = amax > 1e-30f ? __fdiv_rn(amax, fq) : 1.f;
  inv = __frcp_rn(__fmul_rn(norm, s));
}

// out = clamp(rint(v·inv), -qmax-1, qmax) as code bytes (rint rounds half to even, like torch.round).
template <int N, bool kFp8>
__device__ __forceinline__ void encode_codes(const float* v, float inv, float fq, uint8_t (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float code = rintf(v[i] * inv);
    code = fminf(fmaxf(code, -fq - 1.f), fq);
    out[i] = encode<kFp8>(code);
  }
}

// Y = H_m^T X in registers, four columns at a time: v[a][e] holds X[a][c_e] for this lane's VEC columns c_e
// (all MR rows), and becomes Y[a][c_e] = sum_b H_m[b][a] X[b][c_e], accumulated by fmaf from 0 over b = 0..MR-1
// (the CTA kernel's order). hm_s4 holds H_m as +-1.f, row-major (hm_s[b * MR + a] = H_m[b][a]).
template <int MR, int VEC>
__device__ __forceinline__ void hm_step_in_registers(float (&v)[MR][VEC], const float4* hm_s4) {
  static_assert(MR % 4 == 0 && VEC % 4 == 0, "signs and columns four at a time");
#pragma unroll
  for (int e0 = 0; e0 < VEC; e0 += 4) {
    float acc[MR][4];
#pragma unroll
    for (int i = 0; i < MR; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
#pragma unroll
    for (int a = 0; a < MR; ++a) {
#pragma unroll
      for (int i0 = 0; i0 < MR; i0 += 4) {
        const float4 sg = hm_s4[(a * MR + i0) / 4];
        const float ss[4] = {sg.x, sg.y, sg.z, sg.w};
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i0 + k][e] = fmaf(ss[k], v[a][e0 + e], acc[i0 + k][e]);
      }
    }
#pragma unroll
    for (int i = 0; i < MR; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) v[i][e0 + e] = acc[i][e];
  }
}

// Group maxima of |v| per row for the warp kernels: a group is `lanes` consecutive lanes of one row (a power of
// two dividing 32; 32 for a whole row segment), or, where rows > 1, `rows` whole rows of the token.
template <int MR, int VEC>
__device__ __forceinline__ void warp_group_max(const float (&v)[MR][VEC], int lanes, int rows, float (&gmax)[MR]) {
#pragma unroll
  for (int a = 0; a < MR; ++a) {
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < VEC; ++i) amax = fmaxf(amax, fabsf(v[a][i]));
    for (int o = 1; o < lanes; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    gmax[a] = amax;
  }
  if (rows > 1) {
    float row_max[MR];
#pragma unroll
    for (int a = 0; a < MR; ++a) row_max[a] = gmax[a];
#pragma unroll
    for (int a = 0; a < MR; ++a)
#pragma unroll
      for (int b = 0; b < MR; ++b)
        if (b / rows == a / rows) gmax[a] = fmaxf(gmax[a], row_max[b]);
  }
}

}  // namespace adatsq::rq
