// W warps per token for K = m·p with m = 12 and p = 32·VEC·W (K = 1536, 3072, 12288 in the four models): the
// fused rotation + per-group quantization of rotate_quant.cu, bit-identical to its CTA kernel by construction.
// Opt-in (ADATSQ_RQ_KERNEL=warps) until a GPU run has checked that and measured it: written and compiled on a
// machine without a GPU (2026-12-08), never run yet. The default for K = 1536/3072 stays rotate_quant_warp.cu.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "qlinear_kernels.h"
#include "rotate_quant_device.cuh"
#include "rotate_quant_warps.h"

namespace adatsq::rq {
namespace {

// Warp wi of a token's W holds columns [wi·S + l·VEC, wi·S + l·VEC + VEC) (S = 32·VEC) of every row a of the
// m × p view in lane l, so the rotation stays in registers except for the log2 W butterfly stages across the
// token's warps:
//   h < VEC          inside the lane,
//   VEC <= h < S     across lanes (shuffles),
//   S <= h < p       across warps, through shared memory (one exchange: a radix-2 or radix-4 pass),
// then Y = H_m^T X a few columns at a time (each column's outputs need only that column). The pairs, the
// additions and their order are rotate_quant_kernel's (fmaf(±1, b, a) = a ± b rounded once; the radix-4 pass
// (a, b, c, d) -> (a+b)+(c+d), (a-b)+(c-d), (a+b)-(c+d), (a-b)-(c-d); Y[i] = fmaf over a = 0..m-1 from 0),
// so both kernels give bit-identical codes and scales. What changes is the occupancy and the traffic: the CTA
// kernel holds K floats of shared memory per token and meets at a barrier per stage.
// CTAs are persistent: while one token is transformed, the row of the token it takes next is already being
// copied into shared memory (cp.async, each lane its own chunks, so no barrier guards the copy).
constexpr int kWarpsPerCta = 4;
constexpr int kThreads = kWarpsPerCta * 32;

// CTAs per SM the register allocation must allow (launch bounds). VEC = 4 holds 48 values and a 48-float H_m
// accumulator: four CTAs (125 registers at K = 1536, 105 at K = 3072 with two warps). VEC = 8 holds 96 values:
// two CTAs leave ptxas 213 registers (K = 3072) and 246 (K = 12288) without spills; three cap it at 168 and
// spill 244 and 72 bytes (ADATSQ_RQ_KERNEL=occ3, the A/B of the two).
constexpr int kMinCtasVec4 = 4, kMinCtasVec8 = 2, kMinCtasVec8Occ3 = 3;

// Layout of the dynamic shared memory, in floats: the signs (MR·MR, rounded up to 4), then the staged rows
// (SLOTS·K input elements), then the cross-warp exchange (SLOTS·K floats, W > 1 only).
template <int MR, int VEC, int W, typename TIn>
struct Smem {
  static constexpr int kSeg = 32 * VEC, kP = kSeg * W, kK = MR * kP, kSlots = kWarpsPerCta / W;
  static constexpr size_t kSigns = (MR * MR + 3) / 4 * 4 * sizeof(float);
  static constexpr size_t kStage = static_cast<size_t>(kSlots) * kK * sizeof(TIn);
  static constexpr size_t kXchg = W > 1 ? static_cast<size_t>(kSlots) * kK * sizeof(float) : 0;
  static constexpr size_t kBytes = kSigns + kStage + kXchg;
};

// One asynchronous copy of BYTES (8 or 16) from global to shared memory.
template <int BYTES>
__device__ __forceinline__ void cp_async(void* smem_dst, const void* gmem_src) {
  const unsigned saddr = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  if constexpr (BYTES == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr), "l"(gmem_src) : "memory");
  } else {
    static_assert(BYTES == 8, "8 or 16 bytes");
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(saddr), "l"(gmem_src) : "memory");
  }
}

__device__ __forceinline__ float component(const float4& u, int e) {
  return e == 0 ? u.x : e == 1 ? u.y : e == 2 ? u.z : u.w;
}

template <int MR, int VEC, int W, int MINB, typename TIn, bool kFp8>
__global__ void __launch_bounds__(kThreads, MINB) rotate_quant_warps_kernel(
    const TIn* __restrict__ x, int64_t ldx, int64_t M, const int8_t* __restrict__ hm, int group, int qmax,
    float sqrt_k, uint8_t* __restrict__ q, float* __restrict__ s_x) {
  using L = Smem<MR, VEC, W, TIn>;
  constexpr int S = L::kSeg, P = L::kP, K = L::kK, SLOTS = L::kSlots, H4 = VEC / 4;
  static_assert(MR % 4 == 0, "signs are read four at a time");
  static_assert(W == 1 || W == 2 || W == 4, "one exchange: radix 2 or 4");
  extern __shared__ float4 smem[];
  float* hm_s = reinterpret_cast<float*>(smem);  // hm_s[a * MR + i] = H_m[a][i] as +-1.f
  const float4* hm_s4 = smem;
  unsigned char* base = reinterpret_cast<unsigned char*>(smem);
  TIn* stage_all = reinterpret_cast<TIn*>(base + L::kSigns);
  float4* xchg_all = reinterpret_cast<float4*>(base + L::kSigns + L::kStage);
  for (int i = threadIdx.x; i < MR * MR; i += kThreads) hm_s[i] = static_cast<float>(hm[i]);

  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int slot = warp / W, wi = warp % W;
  const int col0 = wi * S + lane * VEC;  // this lane's first column in each row
  TIn* stage = stage_all + slot * K;
  float4* xchg = xchg_all + slot * (K / 4);

  // the rows of token `tok` this lane reads later, into `stage` (nothing past M; one commit group either way)
  auto prefetch = [&](int64_t tok) {
    if (tok < M) {
      const char* src = reinterpret_cast<const char*>(x + tok * ldx + col0);
      char* dst = reinterpret_cast<char*>(stage + col0);
      constexpr int kBytes = VEC * static_cast<int>(sizeof(TIn)), kCopy = kBytes < 16 ? kBytes : 16;
#pragma unroll
      for (int a = 0; a < MR; ++a)
#pragma unroll
        for (int b = 0; b < kBytes; b += kCopy) {
          const size_t off = static_cast<size_t>(a) * P * sizeof(TIn) + b;
          cp_async<kCopy>(dst + off, src + off);
        }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };

  const int64_t units = (M + SLOTS - 1) / SLOTS;  // CTA iterations take SLOTS tokens each
  prefetch(static_cast<int64_t>(blockIdx.x) * SLOTS + slot);
  __syncthreads();  // the signs
  const float fq = static_cast<float>(qmax);

  for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
    const int64_t token = unit * SLOTS + slot;
    const bool live = token < M;  // a dead slot still meets the barriers of its CTA
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    float v[MR][VEC];
#pragma unroll
    for (int a = 0; a < MR; ++a) load_vec<VEC>(stage + a * P + col0, v[a]);
#pragma unroll
    for (int a = 0; a < MR; ++a) butterflies_in_lane(v[a]);
    // every value read from `stage` is consumed above, so the next row may overwrite it
    prefetch((unit + gridDim.x) * SLOTS + slot);
#pragma unroll
    for (int mask = 1; mask < 32; mask <<= 1) butterfly_across_lanes(v, mask, lane);  // h = mask·VEC

    if constexpr (W > 1) {
      // xchg[((a·W + w)·H4 + j)·32 + l] = float4 j of row a in lane l of warp w: the partners of a value sit
      // at the same (a, j, l) in the token's other warps, and each warp's stores and loads are contiguous.
      __syncthreads();  // the previous token's exchange reads are done
#pragma unroll
      for (int a = 0; a < MR; ++a)
#pragma unroll
        for (int j = 0; j < H4; ++j)
          xchg[((a * W + wi) * H4 + j) * 32 + lane] =
              make_float4(v[a][4 * j], v[a][4 * j + 1], v[a][4 * j + 2], v[a][4 * j + 3]);
      __syncthreads();
#pragma unroll
      for (int a = 0; a < MR; ++a) {
#pragma unroll
        for (int j = 0; j < H4; ++j) {
          float4 part[W];
#pragma unroll
          for (int w = 0; w < W; ++w) part[w] = xchg[((a * W + w) * H4 + j) * 32 + lane];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float f[W];
#pragma unroll
            for (int w = 0; w < W; ++w) f[w] = component(part[w], e);
            float out;
            if constexpr (W == 2) {
              out = wi == 0 ? f[0] + f[1] : f[0] - f[1];
            } else {
              const float s0 = f[0] + f[1], s1 = f[0] - f[1];
              const float s2 = f[2] + f[3], s3 = f[2] - f[3];
              out = wi == 0 ? s0 + s2 : wi == 1 ? s1 + s3 : wi == 2 ? s0 - s2 : s1 - s3;
            }
            v[a][4 * j + e] = out;
          }
        }
      }
    }

    hm_step_in_registers(v, hm_s4);

    // Group maxima: a group of G <= S is G/VEC consecutive lanes of one row; a group of G > S (W = 1 only) is
    // G/p whole rows (warps_per_token admits only these cases).
    float gmax[MR];
    const int lanes = group < S ? group / VEC : 32;
    warp_group_max(v, lanes, W == 1 && group > P ? group / P : 1, gmax);

    // Scales: every lane of a group needs the group's (s, 1/(sqrt(K) s)) for all MR rows. Where a group spans
    // at least MR lanes, lane r of the group computes row r's (two correctly rounded divisions and a
    // reciprocal) and the others take it by shuffle; otherwise each lane computes all of them.
    const bool shared_scales = lanes >= MR && group <= S;
    const int first_lane = lane & ~(lanes - 1);
    float s_mine = 1.f, inv_mine = 1.f;
    if (shared_scales) {
      const int r = lane & (lanes - 1);
      float mine = 0.f;
#pragma unroll
      for (int a = 0; a < MR; ++a) mine = a == r ? gmax[a] : mine;
      group_scale(mine, sqrt_k, fq, s_mine, inv_mine);
    }
    uint8_t* qrow = q + token * K + col0;
#pragma unroll
    for (int a = 0; a < MR; ++a) {
      float s, inv;
      if (shared_scales) {
        s = __shfl_sync(0xffffffffu, s_mine, first_lane + a);
        inv = __shfl_sync(0xffffffffu, inv_mine, first_lane + a);
      } else {
        group_scale(gmax[a], sqrt_k, fq, s, inv);
      }
      if (live) {
        uint8_t out[VEC];
        encode_codes<VEC, kFp8>(v[a], inv, fq, out);
        if constexpr (VEC == 8) {
          *reinterpret_cast<uint2*>(qrow + a * P) = *reinterpret_cast<const uint2*>(out);
        } else {
          *reinterpret_cast<uint32_t*>(qrow + a * P) = *reinterpret_cast<const uint32_t*>(out);
        }
        const int first = a * P + col0;  // index of this lane's first element in the token
        if (first % group == 0) s_x[static_cast<int64_t>(first / group) * M + token] = s;
      }
    }
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");  // no copy outlives the CTA
}

constexpr int kMaxDevices = 64;

// SMs × resident CTAs per SM of `kernel` on the current device, asked once per device (`cached` is the
// caller's, one array per instantiation).
template <typename Kernel>
int persistent_grid(Kernel kernel, size_t smem, int (&cached)[kMaxDevices], int& grid_cap) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return static_cast<int>(e);
  if (dev < kMaxDevices && cached[dev] > 0) {
    grid_cap = cached[dev];
    return 0;
  }
  int sms = 0, per_sm = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (e != cudaSuccess) return static_cast<int>(e);
  grid_cap = std::max(per_sm, 1) * sms;
  if (dev < kMaxDevices) cached[dev] = grid_cap;
  return 0;
}

template <int VEC, int W, int MINB, typename TIn, bool kFp8>
int launch_typed(const TIn* x, int64_t ldx, int64_t M, const int8_t* hm, int group, int qmax, void* q,
                 float* s_x, cudaStream_t stream) {
  using L = Smem<12, VEC, W, TIn>;
  const float sqrt_k = static_cast<float>(sqrt(static_cast<double>(L::kK)));
  auto kernel = rotate_quant_warps_kernel<12, VEC, W, MINB, TIn, kFp8>;
  cudaError_t e = cudaSuccess;
  if (L::kBytes > 48 * 1024) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L::kBytes));
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  static int cached[kMaxDevices] = {};
  int grid_cap = 0;
  const int err = persistent_grid(kernel, L::kBytes, cached, grid_cap);
  if (err) return err;
  const int64_t grid = std::min<int64_t>((M + L::kSlots - 1) / L::kSlots, grid_cap);
  kernel<<<static_cast<unsigned>(grid), kThreads, L::kBytes, stream>>>(x, ldx, M, hm, group, qmax, sqrt_k,
                                                                       static_cast<uint8_t*>(q), s_x);
  return static_cast<int>(cudaGetLastError());
}

template <int VEC, int W, int MINB, typename TIn>
int launch_codes(const TIn* x, int64_t ldx, int64_t M, const int8_t* hm, int group, int qmax, int fp8, void* q,
                 float* s_x, cudaStream_t stream) {
  return fp8 ? launch_typed<VEC, W, MINB, TIn, true>(x, ldx, M, hm, group, qmax, q, s_x, stream)
             : launch_typed<VEC, W, MINB, TIn, false>(x, ldx, M, hm, group, qmax, q, s_x, stream);
}

template <typename TIn>
int launch_fmt(const TIn* x, int64_t ldx, int64_t M, int p, int warps, bool occ3, const int8_t* hm, int group,
               int qmax, int fp8, void* q, float* s_x, cudaStream_t stream) {
  if (p == 1024) {
    return occ3 ? launch_codes<8, 4, kMinCtasVec8Occ3>(x, ldx, M, hm, group, qmax, fp8, q, s_x, stream)
                : launch_codes<8, 4, kMinCtasVec8>(x, ldx, M, hm, group, qmax, fp8, q, s_x, stream);
  }
  if (p == 256 && warps == 2) {
    return launch_codes<4, 2, kMinCtasVec4>(x, ldx, M, hm, group, qmax, fp8, q, s_x, stream);
  }
  if (p == 256) {
    return occ3 ? launch_codes<8, 1, kMinCtasVec8Occ3>(x, ldx, M, hm, group, qmax, fp8, q, s_x, stream)
                : launch_codes<8, 1, kMinCtasVec8>(x, ldx, M, hm, group, qmax, fp8, q, s_x, stream);
  }
  return launch_codes<4, 1, kMinCtasVec4>(x, ldx, M, hm, group, qmax, fp8, q, s_x, stream);
}

}  // namespace

KernelOptions kernel_options() {
  KernelOptions opt;
  const char* env = getenv("ADATSQ_RQ_KERNEL");
  for (const char* at = env; at != nullptr && *at != '\0';) {
    const char* end = strchr(at, ',');
    const size_t n = end != nullptr ? static_cast<size_t>(end - at) : strlen(at);
    auto is = [&](const char* name) { return strlen(name) == n && strncmp(at, name, n) == 0; };
    opt.cta |= is("cta");
    opt.warps |= is("warps");
    opt.w2 |= is("w2");
    opt.occ3 |= is("occ3");
    at = end != nullptr ? end + 1 : nullptr;
  }
  return opt;
}

int warps_per_token(const KernelOptions& opt, int K, int rotate, int m, int p, int group) {
  if (opt.cta || !opt.warps || !rotate || m != 12 || (p != 128 && p != 256 && p != 1024) || m * p != K) return 0;
  const int warps = p == 1024 ? 4 : p == 256 && opt.w2 ? 2 : 1;
  const int vec = p / (32 * warps) >= 8 ? 8 : 4, seg = 32 * vec;
  if (group % vec) return 0;
  if (group <= seg) return seg % group == 0 ? warps : 0;
  return warps == 1 && group % p == 0 && m % (group / p) == 0 ? 1 : 0;
}

int launch_warps(const KernelOptions& opt, const void* x, int x_dtype, int64_t M, int64_t ldx, int p, int warps,
                 const int8_t* hm, int group, int qmax, int fp8, void* q, float* s_x, cudaStream_t stream) {
  const bool occ3 = opt.occ3;
  switch (x_dtype) {
    case ADATSQ_F32:
      return launch_fmt(static_cast<const float*>(x), ldx, M, p, warps, occ3, hm, group, qmax, fp8, q, s_x, stream);
    case ADATSQ_F16:
      return launch_fmt(static_cast<const __half*>(x), ldx, M, p, warps, occ3, hm, group, qmax, fp8, q, s_x, stream);
    case ADATSQ_BF16:
      return launch_fmt(static_cast<const __nv_bfloat16*>(x), ldx, M, p, warps, occ3, hm, group, qmax, fp8, q, s_x,
                        stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace adatsq::rq
