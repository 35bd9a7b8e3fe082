// The flow-matching Euler update of FlowMatchEulerDiscreteScheduler.step (diffusers), deterministic branch:
//   dt = sigma_{i+1} - sigma_i (float32),  x <- x + dt * v  (float32, one rounding per operation, no FMA),
// which is what torch computes for `sample + dt * model_output` on float32 tensors, so both implementations are
// bitwise equal to it given the same sigmas.
#pragma once

#include <cstddef>
#include <cstdint>

namespace adatsq {

// CPU reference (compiled with -ffp-contract=off so that dt * v is rounded before the add).
void eulerStepCpu(float* x, float const* v, float const* sigmas, int step, size_t n);

}  // namespace adatsq

#ifdef ADATSQ_HAVE_CUDA
#include <cuda_runtime.h>
extern "C" {
// x[j] <- x[j] + (sigmas[step+1] - sigmas[step]) * v[j]; sigmas in DEVICE memory, so one captured or repeated
// launch sequence needs no host data per step. Asynchronous on `stream`; returns a cudaError_t as int.
int adatsq_euler_step(float* x, float const* v, float const* sigmas, int step, int64_t n, cudaStream_t stream);
// t[j] <- sigmas[step] * scale for j < n (the transformer's timestep input of that step).
int adatsq_fill_timestep(float* t, float const* sigmas, int step, float scale, int64_t n, cudaStream_t stream);
}
#endif
