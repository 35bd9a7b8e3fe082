// Euler update and timestep fill on the device (adatsq/euler.h). __fmul_rn / __fadd_rn forbid the FMA
// contraction nvcc would otherwise apply, so the result is bitwise that of the CPU reference and torch.
#include "adatsq/euler.h"

namespace {
__global__ void eulerKernel(float* x, float const* v, float const* sigmas, int step, int64_t n) {
    float const dt = __fsub_rn(sigmas[step + 1], sigmas[step]);
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        x[j] = __fadd_rn(x[j], __fmul_rn(dt, v[j]));
    }
}

__global__ void fillKernel(float* t, float const* sigmas, int step, float scale, int64_t n) {
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        t[j] = __fmul_rn(sigmas[step], scale);
    }
}

unsigned blocksFor(int64_t n) {
    int64_t b = (n + 255) / 256;
    return static_cast<unsigned>(b < 1 ? 1 : (b > 4096 ? 4096 : b));
}
}  // namespace

extern "C" int adatsq_euler_step(float* x, float const* v, float const* sigmas, int step, int64_t n, cudaStream_t stream) {
    if (n < 0 || step < 0) return static_cast<int>(cudaErrorInvalidValue);
    eulerKernel<<<blocksFor(n), 256, 0, stream>>>(x, v, sigmas, step, n);
    return static_cast<int>(cudaGetLastError());
}

extern "C" int adatsq_fill_timestep(float* t, float const* sigmas, int step, float scale, int64_t n, cudaStream_t stream) {
    if (n < 0 || step < 0) return static_cast<int>(cudaErrorInvalidValue);
    fillKernel<<<blocksFor(n), 256, 0, stream>>>(t, sigmas, step, scale, n);
    return static_cast<int>(cudaGetLastError());
}
