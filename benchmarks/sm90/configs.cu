// One CUTLASS sm90 blockwise-FP8 configuration per shared library, for choosing the production
// configurations of plugins/csrc/qgemm_sm90.cu (benchmarks/sm90/explore.py builds and times them).
// Build: nvcc ... -DADATSQ_CFG=Coop128x128 -DADATSQ_OUT=cutlass::bfloat16_t -shared -o cfg.so configs.cu
#include "../../plugins/csrc/qgemm_sm90.cuh"

using Cfg = adatsq::sm90::ADATSQ_CFG<ADATSQ_OUT>;

extern "C" int cfg_workspace(int M, int N, int K, size_t* bytes) { return Cfg::workspace(M, N, K, bytes); }

extern "C" int cfg_run(const void* q, const float* s_x, const void* w, const float* s_w, const float* bias, void* y,
                       int M, int N, int K, void* ws, size_t ws_bytes, cudaStream_t stream) {
  return Cfg::run(q, s_x, w, s_w, bias, y, M, N, K, ws, ws_bytes, stream);
}
