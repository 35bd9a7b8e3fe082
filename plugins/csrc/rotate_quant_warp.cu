// One warp per token for K = m·p with p = 32·VEC (VEC = 4 or 8) and m = 12 (K = 1536, 3072 in the four
// models): the fused rotation + per-group quantization of rotate_quant.cu, bit-identical to its CTA kernel.
#include <math.h>

#include "qlinear_kernels.h"
#include "rotate_quant_device.cuh"
#include "rotate_quant_warp.h"

namespace adatsq::rq {
namespace {

// Lane l holds X[a][l·VEC, l·VEC + VEC) of every row a of the m × p view, so the whole rotation stays in
// registers: stages h < VEC inside the lane, h = VEC .. p/2 across lanes (shuffles), then Y = H_m^T X one
// block of 4 columns at a time (each column's outputs need only that column). The pairs, the additions and
// their order are those of rotate_quant_kernel (fmaf(±1, b, a) = a ± b rounded once; Y[i] = fmaf over a =
// 0..m-1 from 0), so both kernels give bit-identical codes and scales. What changes is the occupancy: the
// CTA-per-token kernel holds K floats of shared memory and meets at barriers, so at K = 3072 only four tokens
// were in flight per SM (59 µs for M = 4608 against a ~10 µs memory floor); here twelve are, with no barrier.
constexpr int kWarpsPerCta = 4;

template <int MR, int VEC, typename TIn, bool kFp8>
__global__ void __launch_bounds__(kWarpsPerCta * 32, 3) rotate_quant_warp_kernel(
    const TIn* __restrict__ x, int64_t ldx, int64_t M, const int8_t* __restrict__ hm, int group, int qmax,
    float sqrt_k, uint8_t* __restrict__ q, float* __restrict__ s_x) {
  constexpr int P = 32 * VEC, K = MR * P;
  static_assert(MR % 4 == 0, "signs are read four at a time");
  __shared__ float4 hm_s4[MR * MR / 4];  // hm_s[a * MR + i] = H_m[a][i] as +-1.f
  float* hm_s = reinterpret_cast<float*>(hm_s4);
  for (int i = threadIdx.x; i < MR * MR; i += blockDim.x) hm_s[i] = static_cast<float>(hm[i]);
  __syncthreads();

  const int lane = threadIdx.x & 31;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32;
  if (token >= M) return;
  const TIn* xrow = x + token * ldx + lane * VEC;

  float v[MR][VEC];
#pragma unroll
  for (int a = 0; a < MR; ++a) load_vec<VEC>(xrow + a * P, v[a]);

#pragma unroll
  for (int a = 0; a < MR; ++a) butterflies_in_lane(v[a]);
#pragma unroll
  for (int mask = 1; mask < 32; mask <<= 1) butterfly_across_lanes(v, mask, lane);  // h = mask·VEC
  hm_step_in_registers(v, hm_s4);

  // Group maxima: a group of G <= p is G/VEC consecutive lanes of one row; a group of G > p is G/p whole
  // rows (warp_kernel_fits admits only these two cases).
  float gmax[MR];
  warp_group_max(v, group < P ? group / VEC : 32, group > P ? group / P : 1, gmax);

  const float fq = static_cast<float>(qmax);
  uint8_t* qrow = q + token * K + lane * VEC;
#pragma unroll
  for (int a = 0; a < MR; ++a) {
    float s, inv;
    group_scale(gmax[a], sqrt_k, fq, s, inv);
    uint8_t out[VEC];
    encode_codes<VEC, kFp8>(v[a], inv, fq, out);
    if constexpr (VEC == 8) {
      *reinterpret_cast<uint2*>(qrow + a * P) = *reinterpret_cast<const uint2*>(out);
    } else {
      *reinterpret_cast<uint32_t*>(qrow + a * P) = *reinterpret_cast<const uint32_t*>(out);
    }
    const int first = a * P + lane * VEC;  // index of this lane's first element in the token
    if (first % group == 0) s_x[static_cast<int64_t>(first / group) * M + token] = s;
  }
}

template <int VEC, typename TIn, bool kFp8>
int launch_typed(const TIn* x, int64_t ldx, int64_t M, const int8_t* hm, int group, int qmax, void* q,
                 float* s_x, cudaStream_t stream) {
  constexpr int K = 12 * 32 * VEC;
  const float sqrt_k = static_cast<float>(sqrt(static_cast<double>(K)));
  const int64_t ctas = (M + kWarpsPerCta - 1) / kWarpsPerCta;
  if (ctas > INT32_MAX) return static_cast<int>(cudaErrorInvalidValue);
  rotate_quant_warp_kernel<12, VEC, TIn, kFp8><<<static_cast<unsigned>(ctas), kWarpsPerCta * 32, 0, stream>>>(
      x, ldx, M, hm, group, qmax, sqrt_k, static_cast<uint8_t*>(q), s_x);
  return static_cast<int>(cudaGetLastError());
}

template <typename TIn>
int launch_fmt(const TIn* x, int64_t ldx, int64_t M, int p, const int8_t* hm, int group, int qmax, int fp8,
               void* q, float* s_x, cudaStream_t stream) {
  if (p == 256) {
    return fp8 ? launch_typed<8, TIn, true>(x, ldx, M, hm, group, qmax, q, s_x, stream)
               : launch_typed<8, TIn, false>(x, ldx, M, hm, group, qmax, q, s_x, stream);
  }
  return fp8 ? launch_typed<4, TIn, true>(x, ldx, M, hm, group, qmax, q, s_x, stream)
             : launch_typed<4, TIn, false>(x, ldx, M, hm, group, qmax, q, s_x, stream);
}

}  // namespace

bool warp_kernel_fits(int K, int rotate, int m, int p, int group) {
  if (!rotate || m != 12 || (p != 128 && p != 256) || m * p != K) return false;
  const int vec = p / 32;
  if (group <= p) return p % group == 0 && group % vec == 0;
  return group % p == 0 && m % (group / p) == 0;
}

int launch_warp(const void* x, int x_dtype, int64_t M, int64_t ldx, int p, const int8_t* hm, int group, int qmax,
                int fp8, void* q, float* s_x, cudaStream_t stream) {
  switch (x_dtype) {
    case ADATSQ_F32:
      return launch_fmt(static_cast<const float*>(x), ldx, M, p, hm, group, qmax, fp8, q, s_x, stream);
    case ADATSQ_F16:
      return launch_fmt(static_cast<const __half*>(x), ldx, M, p, hm, group, qmax, fp8, q, s_x, stream);
    case ADATSQ_BF16:
      return launch_fmt(static_cast<const __nv_bfloat16*>(x), ldx, M, p, hm, group, qmax, fp8, q, s_x, stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace adatsq::rq
