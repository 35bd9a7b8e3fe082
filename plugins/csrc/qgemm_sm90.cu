// C ABI of the sm_90a FP8 GEMM with per-group promotion (qgemm_sm90.cuh: CUTLASS 3's warp-specialised
// blockwise-scaling kernel with 1 x 128 scales on both operands, and our consumer that promotes one K
// tile's partial product while the next tile's wgmma runs, qgemm_sm90_mainloop.cuh). The configuration
// was chosen on the H200 (benchmarks/sm90/explore.py; numbers in BENCHMARKS.md and benchmarks/NOTES.md).
#include "qgemm_sm90.cuh"
#include "qlinear_kernels.h"

namespace {

bool shape_ok(int64_t M, int64_t N, int64_t K) {
  return M >= 0 && N > 0 && K > 0 && K % adatsq::sm90::kGroup == 0 && N % 8 == 0 && M <= INT32_MAX &&
         N <= INT32_MAX && K <= INT32_MAX;
}

}  // namespace

extern "C" int adatsq_qgemm_sm90_workspace(int64_t M, int64_t N, int64_t K, size_t* bytes) {
  if (!shape_ok(M, N, K) || bytes == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  size_t a = 0, b = 0;
  const int m = static_cast<int>(M > 0 ? M : 1), n = static_cast<int>(N), k = static_cast<int>(K);
  int e = adatsq::sm90::Coop128x128Double<cutlass::bfloat16_t>::workspace(m, n, k, &a);
  if (e == 0) e = adatsq::sm90::Coop128x128Double<float>::workspace(m, n, k, &b);
  *bytes = a > b ? a : b;
  return e;
}

extern "C" int adatsq_qgemm_sm90(const uint8_t* q, const float* s_x, const uint8_t* w, const float* s_w,
                                 const float* bias, void* y, int y_dtype, int64_t M, int64_t N, int64_t K,
                                 void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!shape_ok(M, N, K)) return static_cast<int>(cudaErrorInvalidValue);
  if (reinterpret_cast<uintptr_t>(q) % 16 || reinterpret_cast<uintptr_t>(w) % 16)
    return static_cast<int>(cudaErrorMisalignedAddress);
  if (M == 0) return 0;
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  switch (y_dtype) {
    case ADATSQ_BF16:
      return adatsq::sm90::Coop128x128Double<cutlass::bfloat16_t>::run(q, s_x, w, s_w, bias, y, m, n, k, workspace,
                                                                 workspace_bytes, stream);
    case ADATSQ_F32:
      return adatsq::sm90::Coop128x128Double<float>::run(q, s_x, w, s_w, bias, y, m, n, k, workspace, workspace_bytes,
                                                   stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
