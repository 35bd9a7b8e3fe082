// The full quantized-linear op for callers without Python (TensorRT plugin enqueue, C++ runner): picks the
// sm_90a wgmma path or the portable mma.sync path and lays its scratch out in one caller-owned workspace.
#include "qlinear_kernels.h"

namespace {

constexpr size_t kAlign = 256;

size_t up(size_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

bool is_sm90() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return false;
  return major == 9 && minor == 0;
}

bool fp8_path(int64_t N, int64_t K, int group, int a_bits, int w_format) {
  return a_bits <= 4 && (w_format == ADATSQ_W_INT3 || w_format == ADATSQ_W_INT4) && group == 128 && K % 128 == 0 &&
         N % 8 == 0;
}

struct Layout {  // byte offsets into the workspace
  size_t q = 0, sx = 0, w = 0, sw = 0, gemm = 0, total = 0;
  size_t gemm_bytes = 0;
};

int layout(int64_t M, int64_t N, int64_t K, int group, bool fp8, Layout* l) {
  l->sx = up(static_cast<size_t>(M * K));
  l->total = l->sx + up(static_cast<size_t>(M * (K / group)) * sizeof(float));
  if (!fp8) return 0;
  l->w = l->total;
  l->sw = l->w + up(static_cast<size_t>(N * K));
  l->gemm = l->sw + up(static_cast<size_t>(N * (K / group)) * sizeof(float));
  const int e = adatsq_qgemm_sm90_workspace(M, N, K, &l->gemm_bytes);
  if (e != 0) return e;
  l->total = l->gemm + up(l->gemm_bytes);
  return 0;
}

}  // namespace

extern "C" size_t adatsq_qlinear_workspace_size(int64_t M, int64_t N, int64_t K, int group, int a_bits,
                                                int w_format) {
  if (M < 0 || N <= 0 || K <= 0 || group <= 0 || K % group) return 0;
  Layout l;
  if (layout(M, N, K, group, fp8_path(N, K, group, a_bits, w_format), &l) != 0) layout(M, N, K, group, false, &l);
  return l.total + kAlign;  // + slack to align the caller's pointer
}

extern "C" int adatsq_qlinear_launch(const void* x, int x_dtype, int64_t M, int64_t K, int rotate, int m, int p,
                                     const int8_t* hm, int group, int a_bits, const uint8_t* w, int w_format,
                                     const uint16_t* s_w_f16, const float* bias, void* y, int y_dtype, int64_t N,
                                     void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (M < 0 || N <= 0 || K <= 0 || group <= 0 || K % group || workspace == nullptr)
    return static_cast<int>(cudaErrorInvalidValue);
  static const bool sm90 = is_sm90();  // the process's first device decides (one architecture per process)
  bool fp8 = sm90 && fp8_path(N, K, group, a_bits, w_format);
  Layout l;
  if (fp8 && layout(M, N, K, group, true, &l) != 0) fp8 = false;  // CUTLASS refused the shape: mma.sync path
  int e = fp8 ? 0 : layout(M, N, K, group, false, &l);
  if (e != 0) return e;
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(workspace) + kAlign - 1) / kAlign * kAlign);
  if (static_cast<size_t>(base - static_cast<uint8_t*>(workspace)) + l.total > workspace_bytes)
    return static_cast<int>(cudaErrorInvalidValue);
  auto* q = base + l.q;
  auto* sx = reinterpret_cast<float*>(base + l.sx);
  e = adatsq_rotate_quant(x, x_dtype, M, K, K, rotate, m, p, hm, group, a_bits, fp8 ? 1 : 0, q, sx, stream);
  if (e != 0) return e;
  if (!fp8) return adatsq_qgemm(q, 0, sx, w, w_format, s_w_f16, bias, y, y_dtype, M, N, K, group, stream);
  auto* w8 = base + l.w;
  auto* sw = reinterpret_cast<float*>(base + l.sw);
  e = adatsq_expand_weight(w, w_format, N, K, 1, w8, stream);
  if (e == 0) e = adatsq_weight_scales_gmajor(s_w_f16, N, K / group, sw, stream);
  if (e != 0) return e;
  return adatsq_qgemm_sm90(q, sx, w8, sw, bias, y, y_dtype, M, N, K, base + l.gemm, l.gemm_bytes, stream);
}
