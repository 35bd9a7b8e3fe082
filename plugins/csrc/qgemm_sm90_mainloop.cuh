// Consumer side of the sm90 blockwise-FP8 mainloop with the per-group promotion taken off the tensor
// cores' critical path. It derives from CUTLASS 3's MainloopSm90TmaGmmaWarpSpecializedBlockwiseFP8
// collective (producer, shared-memory layout, TMA and scale loads unchanged) and replaces mma():
//
//   y[m, n] = sum_g s_x[m, g] s_w[n, g] P_g[m, n],   P_g = the wgmma result of K tile g (128 deep)
//
// CUTLASS's consumer waits for P_g and then promotes it (two fp32 operations per accumulator: the product
// of the two scales and the FMA) while the tensor cores idle; with per-channel weight scales that is half
// as long as the 128-deep MMA (2 FP32 ops per accumulator at 128 lanes/clk/SM against 128 MACs per
// accumulator at 4096/clk/SM). The schemes, selectable so they are measured rather than argued
// (benchmarks/sm90/explore.py; results in BENCHMARKS.md and benchmarks/NOTES.md, version 8):
//
//   Serial: CUTLASS's order (wait, promote), scales read from shared memory instead of registers, which
//     lets a 128 x 192 tile fit without spills.
//   Ordered: the two warpgroups issue their wgmma batches in strict alternation (two named barriers), on
//     the theory that each sub-partition's tensor core then finishes warpgroup 0's batch first and one
//     warpgroup promotes while the other's batch runs. Measured 7-10 % slower than CUTLASS's consumer.
//   DoubleBuffer (production): two partial accumulators per warpgroup; the batch of tile g+1 is issued
//     before P_g is promoted (wgmma.wait_group 1 instead of 0). 64 more registers per thread at a
//     128 x 128 tile (168 in all, no spills). Measured 2-7 % faster than CUTLASS's consumer at M = 4608;
//     the rest of the gap to per-tensor FP8 is shared-memory bandwidth (Nsight Compute, NOTES.md).
//   HalfSerial / HalfDoubleBuffer: the partial in f16 accumulators (a = w = 3 only, see the enum), so a
//     128 x 256 or 128 x 192 tile fits; exact, but no faster than DoubleBuffer at 128 x 128 (version 14).
//
// Every P_g is produced from zero (ScaleOut::Zero on its first k32 step) and never spans two groups, so
// the result is the exact integer partial products scaled in fp32, as in the CUTLASS consumer; the first
// promotion of a tile writes the accumulator instead of adding to it (the kernel does not clear it).
#pragma once

#include "cute/tensor.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/cutlass.h"
#include "cutlass/gemm/collective/collective_builder.hpp"

namespace adatsq::sm90 {

enum class Promotion {
  kCutlass,
  kSerial,
  kOrdered,
  kDoubleBuffer,
  kOrderedDoubleBuffer,
  // The partial product in f16 accumulators (FP8 wgmma with f16 accumulation, the same rate): half the
  // registers, so a 128 x 256 tile fits with one partial and a 128 x 192 tile with two. Exact only while every
  // 128-deep partial is an integer of magnitude <= 2048 (f16 holds those exactly): a = w = 3 codes in
  // [-4, 3] give at most 128 * 16 = 2048; 4-bit codes do not (128 * 32 = 4096).
  kHalfSerial,
  kHalfDoubleBuffer,
};

template <class Base, Promotion P>
struct OverlappedPromotionMma : Base {
  using typename Base::MainloopPipeline;
  using typename Base::Params;
  using typename Base::PipelineState;
  using typename Base::SmemLayoutA;
  using typename Base::SmemLayoutB;
  using typename Base::SmemLayoutSFA;
  using typename Base::SmemLayoutSFB;
  using typename Base::TensorStorage;
  using typename Base::TileShape;
  using typename Base::TiledMma;

  static constexpr bool kOrdered = P == Promotion::kOrdered || P == Promotion::kOrderedDoubleBuffer;
  static constexpr bool kDoubleBuffer = P == Promotion::kDoubleBuffer || P == Promotion::kOrderedDoubleBuffer ||
                                        P == Promotion::kHalfDoubleBuffer;
  static constexpr bool kHalf = P == Promotion::kHalfSerial || P == Promotion::kHalfDoubleBuffer;
  static constexpr int kWarpGroups = cute::size(TiledMma{}) / cutlass::NumThreadsPerWarpGroup;
  // Named barriers 0 and 1 after CUTLASS's reserved ones: "warpgroup 0 may issue", "warpgroup 1 may issue".
  static constexpr uint32_t kIssue0 = 0, kIssue1 = 1;
  static constexpr uint32_t kBarrierThreads = 2 * cutlass::NumThreadsPerWarpGroup;

  static_assert(P != Promotion::kCutlass, "kCutlass is the base collective itself (PromotionMainloop)");
  static_assert(Base::ScaleMsPerTile > 1 && Base::ScaleNsPerTile > 1, "per-row and per-column scales only");
  static_assert(Base::ScalePromotionInterval == cute::size<2>(TileShape{}) / 32,
                "one scale group per K tile (a 128-deep tile of k32 wgmma steps)");
  static_assert(!kOrdered || kWarpGroups == 2, "ordered issue alternates two consumer warpgroups");

  // The MMA that produces the partials: the collective's own (fp32 accumulators) or the same tiling with f16
  // accumulators. Both atoms have the same C layout (GMMA::CLayout_64xN), so element i of a partial and
  // element i of the fp32 accumulator are the same (m, n).
  using HalfTiledMma = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<cutlass::float_e4m3_t, cutlass::float_e4m3_t, cutlass::half_t, TileShape,
                                 cute::GMMA::Major::K, cute::GMMA::Major::K>(),
      cute::Layout<cute::Shape<cute::Int<kWarpGroups>, cute::_1, cute::_1>>{}));
  using PartialMma = cute::conditional_t<kHalf, HalfTiledMma, TiledMma>;
  using PartialElement = cute::conditional_t<kHalf, cutlass::half_t, float>;

  template <class FrgTensorC>
  CUTLASS_DEVICE void mma(MainloopPipeline pipeline, PipelineState smem_pipe_read, FrgTensorC& accum,
                          int k_tile_count, int thread_idx, TensorStorage& shared_tensors, Params const&) {
    using namespace cute;
    Tensor sA = make_tensor(make_smem_ptr(shared_tensors.smem_A.data()), SmemLayoutA{});  // (BLK_M,BLK_K,PIPE)
    Tensor sB = make_tensor(make_smem_ptr(shared_tensors.smem_B.data()), SmemLayoutB{});  // (BLK_N,BLK_K,PIPE)
    // Scale tiles broadcast to the (BLK_M, BLK_N) accumulator tile: s_x along N, s_w along M.
    Tensor sSFA = make_tensor(
        make_smem_ptr(shared_tensors.smem_SFA.data()),
        make_layout(make_shape(get<0>(shape(SmemLayoutSFA{})), get<1>(TileShape{}),
                               make_shape(get<1>(shape(SmemLayoutSFA{})), get<2>(shape(SmemLayoutSFA{})))),
                    make_stride(get<0>(stride(SmemLayoutSFA{})), _0{},
                                make_stride(get<1>(stride(SmemLayoutSFA{})), get<2>(stride(SmemLayoutSFA{}))))));
    Tensor sSFB = make_tensor(
        make_smem_ptr(shared_tensors.smem_SFB.data()),
        make_layout(make_shape(get<0>(TileShape{}), get<0>(shape(SmemLayoutSFB{})),
                               make_shape(get<1>(shape(SmemLayoutSFB{})), get<2>(shape(SmemLayoutSFB{})))),
                    make_stride(_0{}, get<0>(stride(SmemLayoutSFB{})),
                                make_stride(get<1>(stride(SmemLayoutSFB{})), get<2>(stride(SmemLayoutSFB{}))))));

    const int wg = __shfl_sync(0xffffffff, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    TiledMma tiled_mma;
    auto wg_mma = tiled_mma.get_slice(make_layout(Int<kWarpGroups>{}, Int<cutlass::NumThreadsPerWarpGroup>{})(wg));
    Tensor tCsSFA = tiled_mma.get_slice(thread_idx).partition_C(sSFA);  // (MMA,MMA_M,MMA_N,(MMA_K,PIPE))
    Tensor tCsSFB = tiled_mma.get_slice(thread_idx).partition_C(sSFB);
    Tensor tCrA = wg_mma.make_fragment_A(wg_mma.partition_A(sA));  // (MMA,MMA_M,MMA_K,PIPE) descriptors
    Tensor tCrB = wg_mma.make_fragment_B(wg_mma.partition_B(sB));
    Tensor part0 = make_fragment_like<PartialElement>(accum);
    Tensor part1 = make_fragment_like<PartialElement>(accum);
    PartialMma partial_mma;

    // P_g = sum over the K tile's k32 steps, started from zero.
    auto issue = [&](int stage, auto& part) {
      warpgroup_fence_operand(part);
      warpgroup_arrive();
      partial_mma.accumulate_ = GMMA::ScaleOut::Zero;
      CUTLASS_PRAGMA_UNROLL
      for (int kb = 0; kb < size<2>(tCrA); ++kb) {
        cute::gemm(partial_mma, tCrA(_, _, kb, stage), tCrB(_, _, kb, stage), part);
        partial_mma.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
      warpgroup_fence_operand(part);
    };
    // Issue order 0(t) < 1(t) < 0(t+1): warpgroup 1 waits for warpgroup 0's batch of the same tile,
    // warpgroup 0 for warpgroup 1's batch of the previous tile.
    auto wait_turn = [&](int t) {
      if constexpr (kOrdered) {
        if (wg == 1) {
          cutlass::arch::NamedBarrier::sync(kBarrierThreads, kIssue1);
        } else if (t > 0) {
          cutlass::arch::NamedBarrier::sync(kBarrierThreads, kIssue0);
        }
      }
    };
    auto pass_turn = [&](int t) {
      if constexpr (kOrdered) {
        if (wg == 0) {
          cutlass::arch::NamedBarrier::arrive(kBarrierThreads, kIssue1);
        } else if (t + 1 < k_tile_count) {
          cutlass::arch::NamedBarrier::arrive(kBarrierThreads, kIssue0);
        }
      }
    };
    // acc[m, n] (+)= P_g[m, n] * s_x[m, g] * s_w[n, g], scales read from the stage that held tile g.
    // Scales are read straight from shared memory (no 32 registers per thread for s_w): 16 LDS.64 + 2 LDS
    // per warp per tile, each one wavefront (the 8 lanes that share a column pair read the same address).
    auto promote = [&](int stage, auto& part, bool first) {
      warpgroup_fence_operand(part);
      Tensor sfa = tCsSFA(_, _, _, make_coord(_0{}, stage));
      Tensor sfb = tCsSFB(_, _, _, make_coord(_0{}, stage));
      if (first) {
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < size(accum); ++i) accum(i) = static_cast<float>(part(i)) * sfa(i) * sfb(i);
      } else {
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < size(accum); ++i) accum(i) += static_cast<float>(part(i)) * sfa(i) * sfb(i);
      }
      warpgroup_fence_operand(accum);
    };

    PipelineState smem_pipe_release = smem_pipe_read;
    if constexpr (!kDoubleBuffer) {
      for (int t = 0; t < k_tile_count; ++t) {
        pipeline.consumer_wait(smem_pipe_read);
        const int stage = smem_pipe_read.index();
        wait_turn(t);
        issue(stage, part0);
        pass_turn(t);
        warpgroup_wait<0>();
        promote(stage, part0, t == 0);
        if (t > 0) {  // stage t-1 is free; stage k_tile_count-1 is released by mma_tail
          pipeline.consumer_release(smem_pipe_release);
          ++smem_pipe_release;
        }
        ++smem_pipe_read;
      }
    } else {
      // Tile t is issued into one partial while tile t-1's partial (the other one) is promoted. ptxas
      // waits for tile 0's batch at the loop entry (it copies that partial into the loop's registers),
      // so the first promotion of a tile is not overlapped; the rest are.
      int prev_stage = 0;
      auto step = [&](int t, auto& issue_into, auto& promote_from) {
        pipeline.consumer_wait(smem_pipe_read);
        const int stage = smem_pipe_read.index();
        wait_turn(t);
        issue(stage, issue_into);
        pass_turn(t);
        warpgroup_wait<1>();  // tile t-1 done, tile t in flight
        promote(prev_stage, promote_from, t == 1);
        pipeline.consumer_release(smem_pipe_release);  // the stage of tile t-1
        ++smem_pipe_release;
        prev_stage = stage;
        ++smem_pipe_read;
      };
      pipeline.consumer_wait(smem_pipe_read);
      prev_stage = smem_pipe_read.index();
      wait_turn(0);
      issue(prev_stage, part0);
      pass_turn(0);
      ++smem_pipe_read;
      int t = 1;
      CUTLASS_PRAGMA_NO_UNROLL
      for (; t + 1 < k_tile_count; t += 2) {
        step(t, part1, part0);
        step(t + 1, part0, part1);
      }
      if (t < k_tile_count) {  // the last tile has an odd index: it goes into part1
        step(t, part1, part0);
        warpgroup_wait<0>();
        promote(prev_stage, part1, false);
      } else {  // the last tile has an even index (or is tile 0): part0
        warpgroup_wait<0>();
        promote(prev_stage, part0, k_tile_count == 1);
      }
      // The last stage is released by mma_tail.
    }
    warpgroup_fence_operand(accum);
  }
};

// The collective for a promotion scheme: CUTLASS's own consumer, or the overlapped one above.
template <class Base, Promotion P>
using PromotionMainloop =
    cute::conditional_t<P == Promotion::kCutlass, Base, OverlappedPromotionMma<Base, P>>;

}  // namespace adatsq::sm90
