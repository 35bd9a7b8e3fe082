// Fused online Hadamard rotation + per-token per-group dynamic quantization (one pass over x).
//
// Two kernels. K = 12·p with p = 128 or 256 (K = 1536, 3072): one warp per token, everything in registers
// (rotate_quant_warp.cu; ADATSQ_RQ_KERNEL=warps opts into rotate_quant_warps.cu's persistent kernels, which
// also take K = 12288 on four warps per token, not yet run on a GPU). Otherwise this file's CTAs of 256
// threads, one token at a time (persistent, with the next token's row copied into shared memory by cp.async
// meanwhile, where the H_m step runs on tensor cores). Thread t owns the 8-element chunks c = t + j*256
// (j < CPT), i.e. elements [8c, 8c+8); CPT is the smallest of {1, 2, 4, 6, 8, 16} that covers K/8 (6: K =
// 12288 exactly).
// The Walsh-Hadamard transform over p = 2^k is the product of k commuting butterfly stages
// (a, b) -> (a + b, a - b) at element distance h = 1, 2, ..., p/2:
//   h < 8      inside a thread's chunk (registers),
//   8..128     across lanes: the partner chunk is lane ^ (h/8) (warp shuffles),
//   h >= 256   through shared memory (two stages per barrier while two remain, then one).
// Then y[i, :] = sum_a H_m[a][i] X[a, :] (H_m^T X) from shared memory (FP32 FMAs for m <= 12, tensor cores
// for the m = 60 and 140 of K = 3840, 8960, 15360: hm_step_mma), then division by sqrt(K) (as the
// reference does), then the per-group absmax (segmented shuffle reduction + shared atomicMax), and
// q = clamp(rint(y / s), -qmax-1, qmax) with s = absmax / qmax, written as e4m3 or int8 bytes.
#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <math.h>

#include "qlinear_kernels.h"
#include "rotate_quant_device.cuh"
#include "rotate_quant_warp.h"
#include "rotate_quant_warps.h"

namespace {

using namespace adatsq::rq;

constexpr int kThreads = 256;

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

// --- H_m^T X on the tensor cores (m = 60, 140: K = 3840, 8960, 15360) ------------------------------------
// Y = H_m^T X as D = A·B with mma.sync.m16n8k16 (bf16 in, fp32 accumulate): A = H_m^T padded with zeros to
// MP = 16·MT rows and columns (±1 and 0 are exact in bf16), B = X (m × p, rows >= m read as 0). X is float32,
// so each B fragment is split into three bf16 parts, X = x_hi + x_mid + x_lo with x_hi = bf16(X),
// x_mid = bf16(X - x_hi), x_lo = X - x_hi - x_mid (each remainder exact in fp32; 3 × 8 significant bits cover
// float32's 24), and every product with ±1 is exact, so Y differs from the FP32-FMA sum only in the rounding
// of the fp32 accumulation. The FMA version (hm_step) reads one float per 4 FMAs from shared memory and is
// bound by it (m = 60: 3600 FMAs per column, 921 k per token at K = 15360); here a warp reuses each B
// fragment for all MT row tiles and each A fragment for its NTW column tiles.
// hmt[i * (MP + 8) + a] = H_m[a][i] as bf16 bits (row stride MP + 8 halves: conflict-free A fragment loads).
template <int MT>
__device__ __forceinline__ void fill_hmt(uint16_t* hmt, const int8_t* __restrict__ hm, int m, int tid) {
  constexpr int MP = 16 * MT, LD = MP + 8;
  for (int idx = tid; idx < MP * LD; idx += kThreads) {
    const int i = idx / LD, a = idx % LD;
    hmt[idx] = (i < m && a < m) ? (hm[a * m + i] > 0 ? 0x3F80u : 0xBF80u) : 0u;
  }
}

// Three bf16x2 registers whose sum is exactly (x0, x1).
__device__ __forceinline__ void split3(float x0, float x1, uint32_t (&out)[3]) {
#pragma unroll
  for (int s = 0; s < 3; ++s) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
    out[s] = *reinterpret_cast<const uint32_t*>(&h);
    const float2 back = __bfloat1622float2(h);
    x0 -= back.x;
    x1 -= back.y;
  }
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// buf (m x p floats) <- H_m^T buf. Warp w owns the 8-column tiles w·NTW .. w·NTW + NTW - 1 (p = 64·NTW).
// Fragment coordinates (PTX ISA, mma.m16n8k16): g = lane / 4, t = lane % 4; A regs (g, 2t), (g+8, 2t),
// (g, 2t+8), (g+8, 2t+8); B regs (k = 2t, 2t+1; n = g), (2t+8, 2t+9; g); D (g, 2t..2t+1), (g+8, 2t..2t+1).
template <int MT, int NTW>
__device__ __forceinline__ void hm_step_mma(float* buf, const uint16_t* hmt, int m, int p, int tid) {
  constexpr int LD = 16 * MT + 8;
  const int lane = tid & 31, warp = tid / 32, g = lane >> 2, t = lane & 3;
  float acc[MT][NTW][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
#pragma unroll 1
  for (int ks = 0; ks < MT; ++ks) {
    uint32_t b[NTW][2][3];
    const int k0 = ks * 16 + 2 * t;
#pragma unroll
    for (int j = 0; j < NTW; ++j) {
      const int col = (warp * NTW + j) * 8 + g;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int k = k0 + 8 * r;
        const float x0 = k < m ? buf[k * p + col] : 0.f;
        const float x1 = k + 1 < m ? buf[(k + 1) * p + col] : 0.f;
        split3(x0, x1, b[j][r]);
      }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const uint16_t* arow = hmt + (mt * 16 + g) * LD + ks * 16 + 2 * t;
      const uint32_t a[4] = {*reinterpret_cast<const uint32_t*>(arow),
                             *reinterpret_cast<const uint32_t*>(arow + 8 * LD),
                             *reinterpret_cast<const uint32_t*>(arow + 8),
                             *reinterpret_cast<const uint32_t*>(arow + 8 * LD + 8)};
#pragma unroll
      for (int j = 0; j < NTW; ++j)
#pragma unroll
        for (int s = 0; s < 3; ++s) mma_bf16(acc[mt][j], a, b[j][0][s], b[j][1][s]);
    }
  }
  __syncthreads();  // every read of buf done before it is overwritten
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < NTW; ++j) {
      const int col = (warp * NTW + j) * 8 + 2 * t;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = mt * 16 + g + 8 * r;
        if (i < m) {
          *reinterpret_cast<float2*>(buf + i * p + col) = make_float2(acc[mt][j][2 * r], acc[mt][j][2 * r + 1]);
        }
      }
    }
  }
  __syncthreads();
}

// CTAs per SM the register allocation must allow. The CTA kernel is latency-bound (Nsight Compute, v13):
// at CPT 6 and 8 with the FMA step it took 128 registers, i.e. two CTAs (16 warps) per SM; capping it at
// three (85 registers) spills 20 bytes. The tensor-core shapes keep the default (224 bytes of spills at CPT 8).
constexpr int min_ctas_per_sm(int cpt, int mt) { return (cpt == 6 || cpt == 8) && mt == 0 ? 3 : 0; }

template <int CPT, typename TIn, bool kFp8, int MT, int NTW>
__global__ void __launch_bounds__(kThreads, min_ctas_per_sm(CPT, MT))
    rotate_quant_kernel(const TIn* __restrict__ x, int64_t ldx, int64_t M, int K, int rotate, int m, int p,
                        const int8_t* __restrict__ hm, int group, int qmax, float sqrt_k, uint8_t* __restrict__ q,
                        float* __restrict__ s_x, int stage_offset_elems) {
  extern __shared__ float4 smem_raw[];
  float* buf = reinterpret_cast<float*>(smem_raw);          // K floats
  unsigned* gmax = reinterpret_cast<unsigned*>(buf + K);    // K/group absmax bit patterns
  // m*m signs as +-1.f (FMA step), or H_m^T as padded bf16 (tensor-core step, MT > 0); 16-byte aligned
  float* hm_s = buf + K + (K / group + 3) / 4 * 4;
  uint16_t* hmt = reinterpret_cast<uint16_t*>(hm_s);
  TIn* stage = reinterpret_cast<TIn*>(smem_raw) + stage_offset_elems;  // the next token's row, K elements

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int nchunks = K / kVec;
  const int ngroups = K / group;

  if constexpr (MT > 0) {
    fill_hmt<MT>(hmt, hm, m, tid);
  } else if (rotate && m > 1) {
    for (int i = tid; i < m * m; i += kThreads) hm_s[i] = static_cast<float>(hm[i]);
  }

  // Persistent CTAs: while token t is transformed, token t + gridDim.x's row is already being copied into
  // `stage` (cp.async). Each thread copies and later reads only its own chunks, so no barrier guards `stage`.
  auto prefetch = [&](int64_t tok) {
    const char* src = reinterpret_cast<const char*>(x + tok * ldx);
    char* dst = reinterpret_cast<char*>(stage);
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
      const int c = tid + j * kThreads;
      if (c < nchunks) {
#pragma unroll
        for (int b = 0; b < kVec * static_cast<int>(sizeof(TIn)); b += 16) {
          const size_t off = static_cast<size_t>(c) * kVec * sizeof(TIn) + b;
          const unsigned saddr = static_cast<unsigned>(__cvta_generic_to_shared(dst + off));
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr), "l"(src + off));
        }
      }
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };
  // stage_offset_elems < 0: the row does not fit next to buf (float32 input with K > ~24k); load directly.
  const bool staged = stage_offset_elems >= 0;
  if (staged && static_cast<int64_t>(blockIdx.x) < M) prefetch(blockIdx.x);

  for (int64_t token = blockIdx.x; token < M; token += gridDim.x) {
    for (int i = tid; i < ngroups; i += kThreads) gmax[i] = 0u;
    asm volatile("cp.async.wait_all;\n" ::);
    float v[CPT][kVec];
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
      const int c = tid + j * kThreads;
      if (c < nchunks) {
        load_vec<kVec>((staged ? stage : x + token * ldx) + static_cast<int64_t>(c) * kVec, v[j]);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[j][i] = 0.f;
      }
    }
    if (staged && token + gridDim.x < M) prefetch(token + gridDim.x);

    if (rotate) {
      // Stages h = 1, 2, 4 inside the chunk (p >= 8 is required).
#pragma unroll
      for (int j = 0; j < CPT; ++j) butterflies_in_lane(v[j]);
      // Stages h = 8 .. 128 across lanes: the chunk at distance h/8 sits in lane ^ (h/8).
      for (int h = kVec; h < p && h < 32 * kVec; h <<= 1) butterfly_across_lanes(v, h / kVec, lane);
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
          if constexpr (MT > 0) {
            hm_step_mma<MT, NTW>(buf, hmt, m, p, tid);
          } else {
            hm_step<(CPT + 3) / 4>(buf, hm_s, m, p, tid);
          }
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
        float s, inv;
        group_scale(__uint_as_float(gmax[g]), norm, fq, s, inv);
        uint8_t out[kVec];
        encode_codes<kVec, kFp8>(v[j], inv, fq, out);
        *reinterpret_cast<uint2*>(q + token * K + static_cast<int64_t>(c) * kVec) =
            *reinterpret_cast<const uint2*>(out);
        if (c % cpg == 0) s_x[static_cast<int64_t>(g) * M + token] = s;
      }
    }
    __syncthreads();  // gmax and buf of this token read by all before the next token writes them
  }
}

template <int CPT, typename TIn, bool kFp8, int MT = 0, int NTW = 0>
int launch_typed(const TIn* x, int64_t ldx, int64_t M, int K, int rotate, int m, int p, const int8_t* hm,
                 int group, int qmax, void* q, float* s_x, cudaStream_t stream) {
  size_t table = 0;
  if (MT > 0) {
    table = static_cast<size_t>(16 * MT) * (16 * MT + 8) * sizeof(uint16_t);
  } else if (rotate && m > 1) {
    table = static_cast<size_t>(m) * m * sizeof(float);
  }
  // buf (K floats) | gmax | Hadamard table | stage (K input elements), each 16-byte aligned
  const size_t stage_at =
      (static_cast<size_t>(K) * sizeof(float) + (K / group + 3) / 4 * 4 * sizeof(unsigned) + table + 15) / 16 * 16;
  const size_t stage_bytes = static_cast<size_t>(K) * sizeof(TIn);
  auto kernel = rotate_quant_kernel<CPT, TIn, kFp8, MT, NTW>;
  // Staged (the next token's row prefetched by cp.async, CTAs looping over tokens) only with the tensor-core
  // H_m step (MT > 0), where it was measured to pay: M = 4608, K = 8960 407 -> 289 us, 3840 -5 %, 15360 -1 %.
  // With the FMA step it cost 2-4 % (K = 10240, 12288), so those keep one CTA per token and direct loads.
  bool staged = false;
  int sms = 0, per_sm = 0;
  cudaError_t e = cudaSuccess;
  if (MT > 0) {
    int dev = 0, smem_max = 0;
    e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e != cudaSuccess) return static_cast<int>(e);
    staged = stage_at + stage_bytes <= static_cast<size_t>(smem_max);
  }
  const size_t smem = staged ? stage_at + stage_bytes : stage_at;
  if (smem > 48 * 1024) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  if (staged) {
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  const int64_t grid = staged ? std::min<int64_t>(M, static_cast<int64_t>(std::max(per_sm, 1)) * sms) : M;
  if (grid > INT32_MAX) return static_cast<int>(cudaErrorInvalidValue);
  const float sqrt_k = static_cast<float>(sqrt(static_cast<double>(K)));
  const int stage_offset = staged ? static_cast<int>(stage_at / sizeof(TIn)) : -1;
  kernel<<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(x, ldx, M, K, rotate, m, p, hm, group, qmax,
                                                                  sqrt_k, static_cast<uint8_t*>(q), s_x, stage_offset);
  return static_cast<int>(cudaGetLastError());
}

// The H_m step on tensor cores where the accumulator tile fits (MT·NTW·4 <= 64 floats per thread): MT =
// ceil(m/16) row tiles, NTW = p/64 column tiles per warp. Only the pairs that occur at the CPT of their K are
// instantiated: (4, 1) 60 × 64 (K = 3840, CPT 2); (9, 1) 140 × 64 (8960, CPT 6); (4, 4) 60 × 256 (15360,
// CPT 8). Every other shape keeps the FMA step; K = 10240 (20 × 512, MT 2, NTW 8) was measured 3 % slower on
// the tensor cores (the H_20 step is small next to its p = 512 butterflies), so it keeps it too.
template <int CPT, typename TIn, bool kFp8>
int launch_hm(const TIn* x, int64_t ldx, int64_t M, int K, int rotate, int m, int p, const int8_t* hm,
              int group, int qmax, void* q, float* s_x, cudaStream_t stream) {
  const int mt = (m + 15) / 16, ntw = p / 64;
  const bool mma = rotate && m > 12 && p % 64 == 0;
  if constexpr (CPT == 2) {
    if (mma && mt == 4 && ntw == 1)
      return launch_typed<CPT, TIn, kFp8, 4, 1>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream);
  }
  if constexpr (CPT == 6) {
    if (mma && mt == 9 && ntw == 1)
      return launch_typed<CPT, TIn, kFp8, 9, 1>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream);
  }
  if constexpr (CPT == 8) {
    if (mma && mt == 4 && ntw == 4)
      return launch_typed<CPT, TIn, kFp8, 4, 4>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream);
  }
  return launch_typed<CPT, TIn, kFp8>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream);
}

template <int CPT, typename TIn>
int launch_fmt(const TIn* x, int64_t ldx, int64_t M, int K, int rotate, int m, int p, const int8_t* hm,
               int group, int qmax, int fp8, void* q, float* s_x, cudaStream_t stream) {
  return fp8 ? launch_hm<CPT, TIn, true>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream)
             : launch_hm<CPT, TIn, false>(x, ldx, M, K, rotate, m, p, hm, group, qmax, q, s_x, stream);
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
  const adatsq::rq::KernelOptions opt = adatsq::rq::kernel_options();  // ADATSQ_RQ_KERNEL
  if (const int warps = adatsq::rq::warps_per_token(opt, k, rotate, m, p, group)) {
    return adatsq::rq::launch_warps(opt, x, x_dtype, M, ldx, p, warps, hm, group, qmax, fp8_codes, q, s_x, stream);
  }
  if (!opt.cta && adatsq::rq::warp_kernel_fits(k, rotate, m, p, group)) {
    return adatsq::rq::launch_warp(x, x_dtype, M, ldx, p, hm, group, qmax, fp8_codes, q, s_x, stream);
  }
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
