#include "adatsq/euler.h"

namespace adatsq {

void eulerStepCpu(float* x, float const* v, float const* sigmas, int step, size_t n) {
    float const dt = sigmas[step + 1] - sigmas[step];
    for (size_t j = 0; j < n; ++j) {
        float const dv = dt * v[j];  // rounded separately: -ffp-contract=off (CMakeLists.txt)
        x[j] = x[j] + dv;
    }
}

}  // namespace adatsq
