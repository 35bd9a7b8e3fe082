// The CUDA Euler kernel against the CPU reference, bit for bit, over pseudo-random data and several steps; and
// the timestep fill. Exit 77 (ctest: skipped) when no CUDA device is present. Label "gpu".
#include "adatsq/euler.h"

#include "check.h"

#include <cstdint>
#include <cstring>
#include <vector>

int main() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        std::printf("no CUDA device: skipped\n");
        return 77;
    }
    int64_t const n = 1000003;  // not a multiple of the block size
    int const steps = 6;
    std::vector<float> x(n), v(static_cast<size_t>(n) * steps), sig = {1.0f, 0.917844f, 0.827229f, 0.7f, 0.3f, 0.1f, 0.0f};
    uint32_t s = 12345u;
    auto next = [&s] { s = s * 1664525u + 1013904223u; return static_cast<float>(s >> 8) / 16777216.0f * 8.0f - 4.0f; };
    for (auto& e : x) e = next();
    for (auto& e : v) e = next();
    float *dx, *dv, *ds, *dt;
    CHECK(cudaMalloc(&dx, n * 4) == cudaSuccess && cudaMalloc(&dv, v.size() * 4) == cudaSuccess);
    CHECK(cudaMalloc(&ds, sig.size() * 4) == cudaSuccess && cudaMalloc(&dt, 4 * 4) == cudaSuccess);
    cudaMemcpy(dx, x.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dv, v.data(), v.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(ds, sig.data(), sig.size() * 4, cudaMemcpyHostToDevice);
    cudaStream_t stream;
    cudaStreamCreate(&stream);
    for (int i = 0; i < steps; ++i) {  // the loop as the runner issues it: no host sync between steps
        CHECK(adatsq_euler_step(dx, dv + static_cast<size_t>(i) * n, ds, i, n, stream) == 0);
        adatsq::eulerStepCpu(x.data(), v.data() + static_cast<size_t>(i) * n, sig.data(), i, static_cast<size_t>(n));
    }
    CHECK(adatsq_fill_timestep(dt, ds, 2, 1.0f, 4, stream) == 0);
    cudaStreamSynchronize(stream);
    std::vector<float> got(n), t(4);
    cudaMemcpy(got.data(), dx, n * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(t.data(), dt, 16, cudaMemcpyDeviceToHost);
    CHECK(std::memcmp(got.data(), x.data(), n * 4) == 0);
    CHECK(t[0] == sig[2] && t[3] == sig[2]);
    std::printf("gpu euler: %lld values x %d steps compared bitwise\n", static_cast<long long>(n), steps);
    CHECK_DONE();
}
