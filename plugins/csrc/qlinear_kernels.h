// C ABI of the adatsq quantized-linear CUDA kernels (DESIGN.md contract 1).
//
// One header for every caller without Python: the TensorRT IPluginV3 enqueue() of the plugins library,
// the C++ runner, and (through ctypes) the torch CUDA implementation of `adatsq::qlinear` in
// plugins/kernels/. Every entry point is asynchronous on `stream` and returns a cudaError_t as int
// (0 = success); shape errors return cudaErrorInvalidValue.
//
// Data layouts (row-major unless said otherwise):
//   x       M x K activations, float32 / float16 / bfloat16 (x_dtype 0 / 1 / 2), row stride ldx elements.
//   q       M x K 8-bit codes: e4m3 bytes (fp8_codes = 1, only for a_bits <= 4: |code| <= 8 is exact in
//           e4m3) or int8 (fp8_codes = 0).
//   s_x     float32 activation scales, GROUP-MAJOR: s_x[g * M + m] (coalesced loads in the GEMM).
//   w       weights N x K in the registered formats of plugins/formats.py: int4 (two's-complement nibbles,
//           low nibble first, K/2 bytes per row), int3 (8 codes + 4 in one 24-bit little-endian word of
//           3 bytes, code i at bits [3i, 3i+3), 3K/8 bytes per row), int8 (K bytes per row), or
//           "expanded": the codes as e4m3 bytes (K bytes per row).
//   s_w     float16 weight scales N x (K/G), row-major (the exchange format of plugins/op.py).
//   y       M x N output, float32 or bfloat16 (y_dtype 0 / 2), y = sum_g s_x[m,g] s_w[n,g] (q_x . q_w)_g + b.
//
// Rotation: x~ = x.R with R = (H_m (x) H_p)/sqrt(K), K = m.p, p a power of two (Sylvester), H_m a Paley
// matrix (m = 1 for a pure power of two). Computed per token as H_m^T . X . H_p / sqrt(K), X = x viewed
// m x p. `hm` is H_m as m*m signed bytes (+-1) in DEVICE memory, hm[a*m + i] = H_m[a][i]
// (adatsq_paley_matrix fills it on the host).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum AdatsqDtype { ADATSQ_F32 = 0, ADATSQ_F16 = 1, ADATSQ_BF16 = 2 };
enum AdatsqWeightFormat { ADATSQ_W_INT3 = 3, ADATSQ_W_INT4 = 4, ADATSQ_W_INT8 = 8, ADATSQ_W_E4M3 = 9 };

// K = m * p with p the largest power of two such that m is 1 or a Paley order (q+1, q prime = 3 mod 4;
// 2(q+1), q prime = 1 mod 4). Returns 0 and sets *m, *p; nonzero if K has no such rotation.
int adatsq_hadamard_factors(int64_t K, int* m, int* p);

// Fills host memory out[m*m] with the +-1 Paley matrix of order m (the same matrix as
// plugins/hadamard.py:paley_base). Returns 0, or nonzero if m is no Paley order.
int adatsq_paley_matrix(int m, int8_t* out);

// Fused activation kernel: one pass over x; rotation (if rotate != 0), per-token per-group absmax,
// scale = absmax / qmax (1 where absmax <= 1e-30), q = clamp(rint(x~ / scale), -qmax-1, qmax) with
// qmax = 2^(a_bits-1) - 1. Requirements: K % 8 == 0, group % 8 == 0, K % group == 0, K <= 32768,
// p >= 8 when rotate != 0, a_bits in {2..8}.
int adatsq_rotate_quant(const void* x, int x_dtype, int64_t M, int64_t K, int64_t ldx, int rotate, int m,
                        int p, const int8_t* hm, int group, int a_bits, int fp8_codes, void* q, float* s_x,
                        cudaStream_t stream);

// Expands packed int3 / int4 / int8 weight codes (N x K) to one byte per code: e4m3 (fp8_out = 1) or
// int8 (fp8_out = 0). For the pre-expanded GEMM variant, or once at load when memory allows.
int adatsq_expand_weight(const uint8_t* w_packed, int w_format, int64_t N, int64_t K, int fp8_out,
                         uint8_t* out, cudaStream_t stream);

// Weight scales for the wgmma GEMM: float16 N x groups (row-major) -> float32 group-major out[g * N + n].
int adatsq_weight_scales_gmajor(const uint16_t* s_w_f16, int64_t N, int64_t groups, float* out,
                                cudaStream_t stream);

// Quantized GEMM on int8 tensor cores (mma.sync m16n8k32 s8, exact s32 accumulation per group, fp32
// promotion s_x * s_w at every group boundary, bias in the epilogue). Accepts e4m3 or int8 activation
// codes (fp8_codes) and weights in int3 / int4 / int8 / e4m3 (w_format), unpacked in the kernel.
// Requirements: K % group == 0, group % 32 == 0. bias may be NULL (float32, N).
int adatsq_qgemm(const void* q, int fp8_codes, const float* s_x, const uint8_t* w, int w_format,
                 const uint16_t* s_w_f16, const float* bias, void* y, int y_dtype, int64_t M, int64_t N,
                 int64_t K, int group, cudaStream_t stream);

// Weight-only op (a_bits = 16, no rotation): y = x . (q_w (.) s_w)^T + b in float32, one warp per output
// channel (the layers that see one vector per sample: M = batch). x is M x K (row stride ldx); w in int3 /
// int4 / int8. Requirements: K % 8 == 0, group % 8 == 0, K % group == 0. bias may be NULL.
int adatsq_weight_only_gemv(const void* x, int x_dtype, int64_t M, int64_t K, int64_t ldx, const uint8_t* w,
                            int w_format, const uint16_t* s_w_f16, const float* bias, void* y, int y_dtype,
                            int64_t N, int group, cudaStream_t stream);

// FP8 wgmma GEMM for sm_90a (qgemm_sm90.cu, CUTLASS 3 warp-specialised blockwise-scaled collective):
// e4m3 codes q (M x K) and w (N x K), group size 128, group-major float32 scales s_x[g * M + m] and
// s_w[g * N + n]; every 128-deep integer product is exact and promoted to float32 with s_x * s_w; y (M x N)
// float32 or bfloat16 (y_dtype 0 / 2). Requirements: K % 128 == 0, N % 8 == 0, q / w 16-byte aligned.
// bias may be NULL. `workspace` of adatsq_qgemm_sm90_workspace() bytes (0 today; may be NULL then).
int adatsq_qgemm_sm90_workspace(int64_t M, int64_t N, int64_t K, size_t* bytes);
int adatsq_qgemm_sm90(const uint8_t* q, const float* s_x, const uint8_t* w, const float* s_w, const float* bias,
                      void* y, int y_dtype, int64_t M, int64_t N, int64_t K, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream);

// Full op, the TensorRT plugin's enqueue(). Path:
//   a_bits <= 4, w_format int3 / int4, group 128, K % 128 == 0, N % 8 == 0, an sm_90 device:
//     rotate_quant to e4m3 codes -> expand the packed weight to e4m3 and its scales to group-major float32
//     (into the workspace; weights stay packed in the engine) -> adatsq_qgemm_sm90 (wgmma);
//   otherwise: rotate_quant to int8 codes -> adatsq_qgemm (mma.sync, weights unpacked in the kernel).
// `workspace` holds at least adatsq_qlinear_workspace_size(M, N, K, ...) bytes (256-byte aligned).
size_t adatsq_qlinear_workspace_size(int64_t M, int64_t N, int64_t K, int group, int a_bits, int w_format);
int adatsq_qlinear_launch(const void* x, int x_dtype, int64_t M, int64_t K, int rotate, int m, int p,
                          const int8_t* hm, int group, int a_bits, const uint8_t* w, int w_format,
                          const uint16_t* s_w_f16, const float* bias, void* y, int y_dtype, int64_t N,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
