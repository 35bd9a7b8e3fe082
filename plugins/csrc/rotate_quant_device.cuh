// Device helpers shared by the two activation kernels (rotate_quant.cu, rotate_quant_warp.cu): vector loads of
// 4 or 8 elements to float, the in-lane and across-lane butterfly stages of the Walsh-Hadamard transform, and
// the code encoding.
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

}  // namespace adatsq::rq
