// FP8 wgmma GEMM with per-group (1 x 128) scales on both operands, built on CUTLASS 3's sm90
// warp-specialised blockwise-scaling collective (a TMA producer warp, consumer warpgroups on QGMMA, fp32
// promotion of each 128-deep partial product with s_x[m, g] * s_w[n, g] on the CUDA cores):
//
//   y[m, n] = sum_g s_x[m, g] s_w[n, g] P_g[m, n] + b[n],   P_g = sum_{k in g} q_x[m, k] q_w[n, k]
//
// P_g is exact: codes |q| <= 8 are exact in e4m3, products are <= 64 and a 128-deep chunk is <= 2^13,
// inside the ~14 significant bits of the FP8 tensor-core accumulator (shared/reference/hopper-kernels.md
// §1.4-1.5); CUTLASS zeroes the partial accumulator at every K tile (ScalePromotionInterval = 4 wgmma of
// k32), so no chunk ever exceeds one group.
//
// Operand layouts (all K-major, what TMA reads without a transpose):
//   q   M x K e4m3 codes, row-major.          s_x  float32, group-major: s_x[g * M + m].
//   w   N x K e4m3 codes, row-major.          s_w  float32, group-major: s_w[g * N + n].
//   y   M x N bf16 or float32, row-major.      b    float32 (N) or NULL.
#pragma once

#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/blockwise_scale_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "qgemm_sm90_mainloop.cuh"

namespace adatsq::sm90 {

using namespace cute;

constexpr int kGroup = 128;

template <class ElementD, class TileShape, class ClusterShape, class KernelSchedule, class EpilogueSchedule,
          class Scheduler, Promotion kPromotion = Promotion::kCutlass>
struct BlockwiseFp8Gemm {
  using ElementA = cutlass::float_e4m3_t;
  using ElementB = cutlass::float_e4m3_t;
  // Granularity (M, N, K) = (1, 1, 128), both scale tensors MN-major (group-major in memory).
  using ScaleConfig =
      cutlass::detail::Sm90BlockwiseScaleConfig<1, 1, kGroup, cute::GMMA::Major::MN, cute::GMMA::Major::MN>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());
  static constexpr int kAlignD = 128 / cutlass::sizeof_bits<ElementD>::value;
  // D = acc + bias[n] (alpha = 1, beta = 0, no C operand read).
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBias<ElementD, float, float, void, float>;
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::RowMajor, kAlignD,
      ElementD, cutlass::layout::RowMajor, kAlignD, EpilogueSchedule, Fusion>::CollectiveOp;
  using BuiltMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementA,
      cute::tuple<cutlass::layout::RowMajor, LayoutSFA>, 16, ElementB,
      cute::tuple<cutlass::layout::ColumnMajor, LayoutSFB>, 16, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;
  using CollectiveMainloop = PromotionMainloop<BuiltMainloop, kPromotion>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, Scheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const void* q, const float* s_x, const void* w, const float* s_w,
                                            const float* bias, void* y, int M, int N, int K) {
    using GK = typename Gemm::GemmKernel;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {M, N, K, 1},
        {static_cast<const ElementA*>(q),
         cutlass::make_cute_packed_stride(typename GK::StrideA{}, cute::make_shape(M, K, 1)),
         static_cast<const ElementB*>(w),
         cutlass::make_cute_packed_stride(typename GK::StrideB{}, cute::make_shape(N, K, 1)), s_x,
         ScaleConfig::tile_atom_to_shape_SFA(make_shape(M, N, K, 1)), s_w,
         ScaleConfig::tile_atom_to_shape_SFB(make_shape(M, N, K, 1))},
        {{},
         nullptr,
         cutlass::make_cute_packed_stride(typename GK::StrideC{}, cute::make_shape(M, N, 1)),
         static_cast<typename GK::ElementD*>(y),
         cutlass::make_cute_packed_stride(typename GK::StrideD{}, cute::make_shape(M, N, 1))}};
    auto& f = args.epilogue.thread;
    f.alpha = 1.f;
    f.beta = 0.f;
    f.bias_ptr = bias;
    return args;
  }

  // Returns 0 and the bytes in *bytes, or cudaErrorInvalidValue when CUTLASS cannot run the shape.
  static int workspace(int M, int N, int K, size_t* bytes) {
    auto args = arguments(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, M, N, K);
    if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return static_cast<int>(cudaErrorInvalidValue);
    *bytes = Gemm::get_workspace_size(args);
    return 0;
  }

  static int run(const void* q, const float* s_x, const void* w, const float* s_w, const float* bias, void* y,
                 int M, int N, int K, void* ws, size_t ws_bytes, cudaStream_t stream) {
    auto args = arguments(q, s_x, w, s_w, bias, y, M, N, K);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return static_cast<int>(cudaErrorInvalidValue);
    if (Gemm::get_workspace_size(args) > ws_bytes) return static_cast<int>(cudaErrorInvalidValue);
    if (gemm.initialize(args, ws, stream) != cutlass::Status::kSuccess) return static_cast<int>(cudaErrorUnknown);
    if (gemm.run(stream) != cutlass::Status::kSuccess) return static_cast<int>(cudaErrorLaunchFailure);
    return static_cast<int>(cudaGetLastError());
  }
};

using cutlass::epilogue::TmaWarpSpecialized;
using cutlass::epilogue::TmaWarpSpecializedCooperative;
using cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8Blockwise;
using cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8Blockwise;
using cutlass::gemm::PersistentScheduler;
using cutlass::gemm::StreamKScheduler;

// Cooperative kernels: two consumer warpgroups share one tile (64 rows each), persistent unless Scheduler
// says otherwise; cluster 1 x 2 multicasts the activation tile along N.
template <class ElementD, class Tile, class Cluster = Shape<_1, _2, _1>, class Scheduler = PersistentScheduler,
          Promotion P = Promotion::kCutlass>
using Coop = BlockwiseFp8Gemm<ElementD, Tile, Cluster, KernelTmaWarpSpecializedCooperativeFP8Blockwise,
                              TmaWarpSpecializedCooperative, Scheduler, P>;
using Tile128x128 = Shape<_128, _128, _128>;
using Tile128x192 = Shape<_128, _192, _128>;
using Tile128x256 = Shape<_128, _256, _128>;

// Production (qgemm_sm90.cu): 128 x 128 with our two-partial consumer, which promotes K tile t while tile
// t+1's wgmma runs (qgemm_sm90_mainloop.cuh).
template <class ElementD>
using Coop128x128Double = Coop<ElementD, Tile128x128, Shape<_1, _2, _1>, PersistentScheduler,
                               Promotion::kDoubleBuffer>;

// Measured against it and not taken (benchmarks/sm90/configs.cu builds them; numbers in BENCHMARKS.md).
// CUTLASS's own consumer (production until version 8, now the baseline), its stream-K and 128 x 192 forms:
template <class ElementD>
using Coop128x128 = Coop<ElementD, Tile128x128>;
template <class ElementD>
using Coop128x128StreamK = Coop<ElementD, Tile128x128, Shape<_1, _2, _1>, StreamKScheduler>;
template <class ElementD>
using Coop128x192 = Coop<ElementD, Tile128x192>;
// Ping-pong: each consumer warpgroup owns a 64 x 128 tile; one promotes while the other's wgmma runs.
template <class ElementD>
using Pingpong64x128 = BlockwiseFp8Gemm<ElementD, Shape<_64, _128, _128>, Shape<_1, _2, _1>,
                                        KernelTmaWarpSpecializedPingpongFP8Blockwise, TmaWarpSpecialized,
                                        PersistentScheduler>;
// Our consumer's other schemes and placements:
template <class ElementD>
using Coop128x128Ordered = Coop<ElementD, Tile128x128, Shape<_1, _2, _1>, PersistentScheduler, Promotion::kOrdered>;
template <class ElementD>
using Coop128x128OrderedDouble =
    Coop<ElementD, Tile128x128, Shape<_1, _2, _1>, PersistentScheduler, Promotion::kOrderedDoubleBuffer>;
template <class ElementD>
using Coop128x192Serial = Coop<ElementD, Tile128x192, Shape<_1, _2, _1>, PersistentScheduler, Promotion::kSerial>;
template <class ElementD>
using Coop128x128DoubleC21 =
    Coop<ElementD, Tile128x128, Shape<_2, _1, _1>, PersistentScheduler, Promotion::kDoubleBuffer>;
// f16 partials (a = w = 3 only: see Promotion::kHalfSerial): a wider tile in the same registers.
template <class ElementD>
using Coop128x256HalfSerial = Coop<ElementD, Tile128x256, Shape<_1, _2, _1>, PersistentScheduler, Promotion::kHalfSerial>;
template <class ElementD>
using Coop128x192HalfDouble =
    Coop<ElementD, Tile128x192, Shape<_1, _2, _1>, PersistentScheduler, Promotion::kHalfDoubleBuffer>;
template <class ElementD>
using Coop128x128DoubleStreamK =
    Coop<ElementD, Tile128x128, Shape<_1, _2, _1>, StreamKScheduler, Promotion::kDoubleBuffer>;

}  // namespace adatsq::sm90
