// EXPERIMENT, not built into libadatsq_kernels.so: a hand-written warp-specialised FP8 wgmma GEMM (raw PTX:
// TMA, mbarriers, 2-CTA cluster multicast, setmaxnreg) with the same contract as adatsq_qgemm_sm90. Exact
// (fp32 output within 4e-8 of float64 on the H200) but 500-640 TFLOP/s against CUTLASS's 810-850 on the
// same shapes; kept with its measurements in benchmarks/NOTES.md (version 5). Build for explore.py:
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fPIC -shared \
//        -o raw_wgmma.so benchmarks/sm90/qgemm_raw_wgmma.cu
// FP8 wgmma GEMM with per-group promotion, warp-specialised, for sm_90a (the fast path for a <= 4, w <= 4):
//
//   y[m, n] = sum_g s_x[g, m] s_w[g, n] P_g[m, n] + b[n],   P_g = sum_{k in g} q_x[m, k] q_w[n, k],  G = 128
//
// P_g is exact on the FP8 tensor cores: codes |q| <= 8 are exact in e4m3, products are <= 64 and one
// 128-deep group sums to <= 2^13, inside the ~14 significant bits the FP8 accumulator keeps
// (shared/reference/hopper-kernels.md §1.4-1.5). Every group starts a fresh partial accumulator T and is
// promoted to float32 as acc += T * (s_x * s_w) on the CUDA cores.
//
// Structure (one 128 x 128 output tile per CTA, 384 threads):
//   * warpgroup 2, one warp: producer. Per group g: TMA of the 128 x 128 e4m3 tiles of q and w into a
//     128-byte-swizzled stage (the layout wgmma reads), plain loads of the tile's 128 + 128 scales of g.
//     STAGES stages in flight, full/empty mbarriers.
//   * warpgroups 0 and 1: consumers, 64 rows each, m64n128k32 QGMMA. Two partial accumulators T0/T1
//     alternate: the four wgmma of group g+1 are issued BEFORE group g is promoted (wgmma.wait_group 1),
//     so the promotion FFMAs of one group overlap the tensor-core work of the next instead of idling it.
//   * setmaxnreg moves registers from the producer (24) to the consumers (240): acc + T0 + T1 = 192.
// Operands are K-major (q: M x K, w: N x K, both row-major bytes), scales group-major float32
// (s_x[g * M + m], s_w[g * N + n]), y row-major M x N in float32 or bfloat16; K % 128 == 0, N % 8 == 0.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cudaTypedefs.h>

#include <cstdlib>
#include <mutex>

#include "../../plugins/csrc/qlinear_kernels.h"

namespace {

constexpr int kBM = 128, kBN = 128, kBK = 128;  // kBK = one quantization group
constexpr int kStages = 6;
constexpr int kTileBytes = kBM * kBK;  // e4m3: one byte per code (also kBN * kBK)
constexpr int kThreads = 384;
constexpr int kCluster = 2;  // CTAs of one cluster: same rows of q, neighbouring column tiles of w

struct Smem {  // offsets into the 1024-byte-aligned dynamic shared memory
  static constexpr int a = 0;
  static constexpr int b = a + kStages * kTileBytes;
  static constexpr int sx = b + kStages * kTileBytes;
  static constexpr int sw = sx + kStages * kBM * 4;
  static constexpr int full = sw + kStages * kBN * 4;
  static constexpr int empty = full + kStages * 8;
  static constexpr int bytes = empty + kStages * 8 + 1024;  // + alignment slack
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

// 4-byte asynchronous copy global -> shared; reads nothing and writes 0 when !valid.
__device__ __forceinline__ void cp_async_4(uint32_t dst, const float* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}

// One arrive on `bar` once all of this thread's earlier cp.async have landed (counted in the init count).
__device__ __forceinline__ void cp_async_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

// Arrive on the barrier at the same shared-memory offset in CTA `rank` of the cluster.
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t bar, uint32_t rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(bar), "r"(rank));
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}

__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

// TMA box -> the same shared-memory offset of every CTA in `mask`, completing on each one's barrier.
__device__ __forceinline__ void tma_load_2d_multicast(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0,
                                                      int c1, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%3, %4}], [%2], %5;" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "h"(mask)
      : "memory");
}

__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}

// wgmma shared-memory matrix descriptor, K-major with 128-byte swizzle: rows of 128 bytes, core-matrix
// groups of 8 rows 1024 bytes apart (stride byte offset); the leading byte offset is unused in this mode.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Keeps the compiler from moving reads or writes of an accumulator across wgmma issue / wait.
__device__ __forceinline__ void fence_regs(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d (+)= A(64 x 32, e4m3) . B(128 x 32, e4m3)^T; scale_d = 0 starts a fresh sum.
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1;\n}"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}

// Issues the four k32 steps of one group into t (fresh sum) from stage `stage`, rows [64 * wg, 64 * wg + 64).
__device__ __forceinline__ void issue_group(float (&t)[64], uint32_t base, int stage, int wg) {
  const uint32_t a = base + Smem::a + stage * kTileBytes + wg * 64 * kBK;
  const uint32_t b = base + Smem::b + stage * kTileBytes;
  fence_regs(t);
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < kBK / 32; ++k) wgmma_m64n128k32(t, smem_desc(a + 32 * k), smem_desc(b + 32 * k), k);
  wgmma_commit();
}

// acc += t * s_x[row] * s_w[col] with the scales of `stage`. Accumulator layout of m64nNk32 (thread l of
// warp w in the warpgroup): t[4i + 2h + j] is row 16w + l/4 + 8h, column 8i + 2(l%4) + j.
__device__ __forceinline__ void promote(float (&acc)[64], float (&t)[64], const uint8_t* smem, int stage, int wg,
                                        int warp, int lane) {
  fence_regs(t);
  const float* sx = reinterpret_cast<const float*>(smem + Smem::sx) + stage * kBM + wg * 64 + warp * 16 + lane / 4;
  const float* sw = reinterpret_cast<const float*>(smem + Smem::sw) + stage * kBN + 2 * (lane % 4);
  const float x0 = sx[0], x1 = sx[8];
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float2 w = *reinterpret_cast<const float2*>(sw + 8 * i);
    acc[4 * i + 0] = fmaf(t[4 * i + 0], x0 * w.x, acc[4 * i + 0]);
    acc[4 * i + 1] = fmaf(t[4 * i + 1], x0 * w.y, acc[4 * i + 1]);
    acc[4 * i + 2] = fmaf(t[4 * i + 2], x1 * w.x, acc[4 * i + 2]);
    acc[4 * i + 3] = fmaf(t[4 * i + 3], x1 * w.y, acc[4 * i + 3]);
  }
}

template <typename OutT>
__device__ __forceinline__ void store2(OutT* y, float a, float b);
template <>
__device__ __forceinline__ void store2<float>(float* y, float a, float b) {
  *reinterpret_cast<float2*>(y) = make_float2(a, b);
}
template <>
__device__ __forceinline__ void store2<__nv_bfloat16>(__nv_bfloat16* y, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(y) = __floats2bfloat162_rn(a, b);
}

// Consumer warpgroup `wg`: rows [m0 + 64 wg, m0 + 64 wg + 64) x columns [n0, n0 + 128), then the epilogue.
template <bool kPipelined, typename OutT>
__device__ __forceinline__ void consume(const uint8_t* smem, uint32_t base, const float* s_x, const float* bias,
                                        OutT* y, int M, int N, int m0, int n0, int groups, int wg, int warp,
                                        int lane) {
  float acc[64], t0[64], t1[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
  const uint32_t empty0 = base + Smem::empty, full0 = base + Smem::full;
  auto wait_full = [&](int g) { mbar_wait(full0 + 8 * (g % kStages), (g / kStages) & 1); };
  auto release = [&](int g) {
    if (lane == 0)
      for (uint32_t r = 0; r < kCluster; ++r) mbar_arrive_cluster(empty0 + 8 * (g % kStages), r);
  };
  if constexpr (!kPipelined) {  // one partial accumulator: promote after each group's wgmma completes
    for (int g = 0; g < groups; ++g) {
      wait_full(g);
      issue_group(t0, base, g % kStages, wg);
      wgmma_wait<0>();
      promote(acc, t0, smem, g % kStages, wg, warp, lane);
      release(g);
    }
  } else {
  // Software pipeline over groups, two at a time so t0/t1 stay compile-time registers:
  // issue(g+1) -> wait until only g+1 is in flight -> promote(g) -> release stage of g.
  wait_full(0);
  issue_group(t0, base, 0, wg);
  int g = 0;
  for (; g + 2 < groups; g += 2) {
    wait_full(g + 1);
    issue_group(t1, base, (g + 1) % kStages, wg);
    wgmma_wait<1>();
    promote(acc, t0, smem, g % kStages, wg, warp, lane);
    release(g);
    wait_full(g + 2);
    issue_group(t0, base, (g + 2) % kStages, wg);
    wgmma_wait<1>();
    promote(acc, t1, smem, (g + 1) % kStages, wg, warp, lane);
    release(g + 1);
  }
  if (g + 1 < groups) {  // two groups left: g in t0 (in flight), g + 1
    wait_full(g + 1);
    issue_group(t1, base, (g + 1) % kStages, wg);
    wgmma_wait<1>();
    promote(acc, t0, smem, g % kStages, wg, warp, lane);
    release(g);
    wgmma_wait<0>();
    promote(acc, t1, smem, (g + 1) % kStages, wg, warp, lane);
    release(g + 1);
  } else {  // one group left, in t0
    wgmma_wait<0>();
    promote(acc, t0, smem, g % kStages, wg, warp, lane);
    release(g);
  }
  }

  // Epilogue: + bias, two adjacent columns per store.
  const int row = m0 + wg * 64 + warp * 16 + lane / 4;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const int col = n0 + 8 * i + 2 * (lane % 4);
    if (col >= N) continue;
    const float b0 = bias ? bias[col] : 0.f, b1 = bias ? bias[col + 1] : 0.f;
    if (row < M) store2(y + static_cast<int64_t>(row) * N + col, acc[4 * i] + b0, acc[4 * i + 1] + b1);
    if (row + 8 < M)
      store2(y + static_cast<int64_t>(row + 8) * N + col, acc[4 * i + 2] + b0, acc[4 * i + 3] + b1);
  }
}

template <bool kPipelined, typename OutT>
__global__ void __cluster_dims__(kCluster, 1, 1) __launch_bounds__(kThreads, 1)
    qgemm_wgmma_kernel(const __grid_constant__ CUtensorMap map_q, const __grid_constant__ CUtensorMap map_w,
                       const float* __restrict__ s_x, const float* __restrict__ s_w, const float* __restrict__ bias,
                       OutT* __restrict__ y, int M, int N, int K) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  const uint32_t base = smem_u32(smem);
  const int tiles_m = (M + kBM - 1) / kBM;
  const uint32_t rank = cluster_rank();
  const int pair = blockIdx.x / kCluster;
  const int m0 = (pair % tiles_m) * kBM, n0 = ((pair / tiles_m) * kCluster + rank) * kBN;
  const int groups = K / kBK;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(base + Smem::full + 8 * s, 1 + 32);        // producer's expect_tx arrive + 32 scale lanes
      mbar_init(base + Smem::empty + 8 * s, 8 * kCluster);  // every consumer warp of the cluster
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cluster_sync();  // the peer's barriers exist before anything is multicast into it

  if (wg == 2) {  // producer warpgroup; one warp works
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (warp == 0) {
      for (int g = 0; g < groups; ++g) {
        const int s = g % kStages, round = g / kStages;
        // stage s is free once every consumer warp of BOTH CTAs released it: our half of the q tile
        // lands in the peer too.
        if (round > 0) mbar_wait(base + Smem::empty + 8 * s, (round - 1) & 1);
        const uint32_t full = base + Smem::full + 8 * s;
        if (lane == 0) {
          mbar_arrive_expect_tx(full, 2 * kTileBytes);
          constexpr int half = kBM / kCluster;
          tma_load_2d_multicast(base + Smem::a + s * kTileBytes + rank * half * kBK, &map_q, full, g * kBK,
                                m0 + rank * half, (1u << kCluster) - 1);
          tma_load_2d(base + Smem::b + s * kTileBytes, &map_w, full, g * kBK, n0);
        }
        // The tile's scales of group g: 4-byte cp.async per value (zero-filled past M / N), completion
        // tracked by the same barrier, so the producer never waits on a global load.
#pragma unroll
        for (int j = lane; j < kBM; j += 32) {
          const int m = m0 + j, n = n0 + j;
          cp_async_4(base + Smem::sx + 4 * (s * kBM + j), s_x + static_cast<int64_t>(g) * M + (m < M ? m : 0),
                     m < M);
          cp_async_4(base + Smem::sw + 4 * (s * kBN + j), s_w + static_cast<int64_t>(g) * N + (n < N ? n : 0),
                     n < N);
        }
        cp_async_arrive(full);
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    consume<kPipelined>(smem, base, s_x, bias, y, M, N, m0, n0, groups, wg, warp, lane);
  }
  cluster_sync();  // no CTA leaves while its peer may still arrive on its barriers
}

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) ==
            cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  return fn;
}

// rows x K bytes, row-major; boxes of box_rows rows x 128 bytes, 128-byte swizzle; out-of-range rows read as 0.
bool tensor_map(CUtensorMap* map, const void* ptr, int64_t rows, int64_t K, uint32_t box_rows) {
  auto fn = encode_fn();
  if (!fn) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(K), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(K)};
  const cuuint32_t box[2] = {kBK, box_rows}, elem[2] = {1, 1};
  return fn(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(ptr), dims, strides, box, elem,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <typename OutT>
int launch(const CUtensorMap& mq, const CUtensorMap& mw, const float* s_x, const float* s_w, const float* bias,
           void* y, int M, int N, int K, cudaStream_t stream) {
  const bool pipelined = !getenv("ADATSQ_WGMMA_SINGLE_T");  // exploration switch
  auto kernel = pipelined ? qgemm_wgmma_kernel<true, OutT> : qgemm_wgmma_kernel<false, OutT>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::bytes);
  if (e != cudaSuccess) return static_cast<int>(e);
  const int pairs_n = ((N + kBN - 1) / kBN + kCluster - 1) / kCluster;  // an odd last tile reads zeros past N
  const unsigned grid = static_cast<unsigned>(((M + kBM - 1) / kBM) * pairs_n * kCluster);
  kernel<<<grid, kThreads, Smem::bytes, stream>>>(mq, mw, s_x, s_w, bias, static_cast<OutT*>(y), M, N, K);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" int adatsq_qgemm_wgmma(const uint8_t* q, const float* s_x, const uint8_t* w, const float* s_w,
                                  const float* bias, void* y, int y_dtype, int64_t M, int64_t N, int64_t K,
                                  cudaStream_t stream) {
  if (M < 0 || N <= 0 || K <= 0 || K % kBK || N % 8 || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
    return static_cast<int>(cudaErrorInvalidValue);
  if (reinterpret_cast<uintptr_t>(q) % 16 || reinterpret_cast<uintptr_t>(w) % 16)
    return static_cast<int>(cudaErrorMisalignedAddress);
  if (M == 0) return 0;
  CUtensorMap mq, mw;
  if (!tensor_map(&mq, q, M, K, kBM / kCluster) || !tensor_map(&mw, w, N, K, kBN)) return static_cast<int>(cudaErrorInvalidValue);
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  switch (y_dtype) {
    case ADATSQ_F32: return launch<float>(mq, mw, s_x, s_w, bias, y, m, n, k, stream);
    case ADATSQ_BF16: return launch<__nv_bfloat16>(mq, mw, s_x, s_w, bias, y, m, n, k, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
