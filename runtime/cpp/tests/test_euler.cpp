// The CPU Euler update. Without arguments: hand-computed cases (exact in binary floating point). With a
// fixture file (written by tests/unit/runtime/test_cpp_runner.py from diffusers' FlowMatchEulerDiscreteScheduler)
// every step's result must equal the scheduler's bit for bit. Fixture layout, little-endian:
//   int32 steps, int64 n, float32 sigmas[steps + 1], float32 x0[n], float32 v[steps][n], float32 x[steps][n]
#include "adatsq/euler.h"

#include "check.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <vector>

int main(int argc, char** argv) {
    {
        float x[3] = {1.0f, -2.0f, 0.5f};
        float const v[3] = {2.0f, 4.0f, -1.0f};
        float const sig[3] = {1.0f, 0.5f, 0.0f};
        adatsq::eulerStepCpu(x, v, sig, 0, 3);  // dt = -0.5
        CHECK(x[0] == 0.0f && x[1] == -4.0f && x[2] == 1.0f);
        adatsq::eulerStepCpu(x, v, sig, 1, 3);  // dt = -0.5
        CHECK(x[0] == -1.0f && x[1] == -6.0f && x[2] == 1.5f);
    }
    if (argc > 1) {
        std::ifstream f(argv[1], std::ios::binary);
        CHECK(static_cast<bool>(f));
        int32_t steps = 0;
        int64_t n = 0;
        f.read(reinterpret_cast<char*>(&steps), 4);
        f.read(reinterpret_cast<char*>(&n), 8);
        std::vector<float> sig(static_cast<size_t>(steps) + 1), x(static_cast<size_t>(n)), v(static_cast<size_t>(n)), want(static_cast<size_t>(n));
        f.read(reinterpret_cast<char*>(sig.data()), static_cast<std::streamsize>(sig.size() * 4));
        f.read(reinterpret_cast<char*>(x.data()), n * 4);
        std::vector<std::vector<float>> vs(steps, std::vector<float>(n)), xs(steps, std::vector<float>(n));
        for (auto& s : vs) f.read(reinterpret_cast<char*>(s.data()), n * 4);
        for (auto& s : xs) f.read(reinterpret_cast<char*>(s.data()), n * 4);
        CHECK(static_cast<bool>(f));
        int64_t mismatches = 0;
        for (int i = 0; i < steps; ++i) {
            adatsq::eulerStepCpu(x.data(), vs[i].data(), sig.data(), i, static_cast<size_t>(n));
            mismatches += std::memcmp(x.data(), xs[i].data(), n * 4) != 0;
            x = xs[i];  // each step from the scheduler's own state
        }
        std::printf("fixture: %d steps x %lld values, %lld step(s) differ\n", steps, static_cast<long long>(n), static_cast<long long>(mismatches));
        CHECK(mismatches == 0);
    }
    CHECK_DONE();
}
