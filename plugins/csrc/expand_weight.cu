// Expansion of packed weight codes (plugins/formats.py layouts) to one byte per code, e4m3 or int8.
//   int4: byte b holds codes 2i (low nibble) and 2i+1 (high nibble), two's complement: v = ((u ^ 8) - 8).
//   int3: bytes 3w..3w+2 form the little-endian word W; code 8w+i = ((W >> 3i) & 7) - 4.
//   int8: one byte per code.
// Codes |v| <= 8 are exact in e4m3; int8 codes beyond +-16 are rejected for e4m3 output by the caller.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "qlinear_kernels.h"

namespace {

template <bool kFp8>
__device__ __forceinline__ uint8_t enc(int v) {
  if constexpr (kFp8) {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(static_cast<float>(v), __NV_SATFINITE, __NV_E4M3));
  } else {
    return static_cast<uint8_t>(static_cast<int8_t>(v));
  }
}

// One thread per 8 output codes (one int3 word, four int4 bytes or eight int8 bytes).
template <int kFmt, bool kFp8>
__global__ void expand_kernel(const uint8_t* __restrict__ w, int64_t N, int64_t K, uint8_t* __restrict__ out) {
  const int64_t words_per_row = K / 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * words_per_row) return;
  const int64_t n = idx / words_per_row;
  const int64_t wd = idx - n * words_per_row;
  int codes[8];
  if constexpr (kFmt == ADATSQ_W_INT3) {
    const uint8_t* src = w + n * (K / 8 * 3) + wd * 3;
    const uint32_t word = src[0] | (static_cast<uint32_t>(src[1]) << 8) | (static_cast<uint32_t>(src[2]) << 16);
#pragma unroll
    for (int i = 0; i < 8; ++i) codes[i] = static_cast<int>((word >> (3 * i)) & 7u) - 4;
  } else if constexpr (kFmt == ADATSQ_W_INT4) {
    const uint32_t word = *reinterpret_cast<const uint32_t*>(w + n * (K / 2) + wd * 4);  // K % 8 == 0: aligned
#pragma unroll
    for (int i = 0; i < 8; ++i) codes[i] = static_cast<int>(((word >> (4 * i)) & 0xFu) ^ 8u) - 8;
  } else {
    const int8_t* src = reinterpret_cast<const int8_t*>(w) + n * K + wd * 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) codes[i] = src[i];
  }
  uint8_t b[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) b[i] = enc<kFp8>(codes[i]);
  *reinterpret_cast<uint2*>(out + n * K + wd * 8) = *reinterpret_cast<const uint2*>(b);
}

template <int kFmt>
int launch(const uint8_t* w, int64_t N, int64_t K, int fp8, uint8_t* out, cudaStream_t stream) {
  const int64_t total = N * (K / 8);
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((total + threads - 1) / threads);
  if (fp8) {
    expand_kernel<kFmt, true><<<blocks, threads, 0, stream>>>(w, N, K, out);
  } else {
    expand_kernel<kFmt, false><<<blocks, threads, 0, stream>>>(w, N, K, out);
  }
  return static_cast<int>(cudaGetLastError());
}

// out[g * N + n] = float(s_w[n * groups + g]): one thread per output, coalesced writes.
__global__ void scales_kernel(const __half* __restrict__ s_w, int64_t N, int64_t groups, float* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * groups) return;
  const int64_t g = idx / N, n = idx - g * N;
  out[idx] = __half2float(s_w[n * groups + g]);
}

}  // namespace

extern "C" int adatsq_weight_scales_gmajor(const uint16_t* s_w_f16, int64_t N, int64_t groups, float* out,
                                           cudaStream_t stream) {
  if (N < 0 || groups < 0) return static_cast<int>(cudaErrorInvalidValue);
  const int64_t total = N * groups;
  if (total == 0) return 0;
  const int threads = 256;
  scales_kernel<<<static_cast<unsigned>((total + threads - 1) / threads), threads, 0, stream>>>(
      reinterpret_cast<const __half*>(s_w_f16), N, groups, out);
  return static_cast<int>(cudaGetLastError());
}

extern "C" int adatsq_expand_weight(const uint8_t* w_packed, int w_format, int64_t N, int64_t K, int fp8_out,
                                    uint8_t* out, cudaStream_t stream) {
  if (K % 8 || N < 0) return static_cast<int>(cudaErrorInvalidValue);
  if (N == 0) return 0;
  switch (w_format) {
    case ADATSQ_W_INT3: return launch<ADATSQ_W_INT3>(w_packed, N, K, fp8_out, out, stream);
    case ADATSQ_W_INT4: return launch<ADATSQ_W_INT4>(w_packed, N, K, fp8_out, out, stream);
    case ADATSQ_W_INT8:
      if (fp8_out) return static_cast<int>(cudaErrorInvalidValue);
      return launch<ADATSQ_W_INT8>(w_packed, N, K, fp8_out, out, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
