// Where libnvinfer is absent, constructing the runner on a valid output directory fails with one clear line
// (after the directory was validated, before any CUDA call); a bad directory fails on the directory first.
#include "adatsq/runner.h"

#include "check.h"
#include "fixture.h"

#include <cstdlib>

int main() {
    setenv("ADATSQ_NVINFER", "libnvinfer_absent_for_this_test.so", 1);
    std::string const root = fixture::make();
    CHECK_THROWS_WITH(adatsq::Runner(root, {}), "TensorRT runtime not found (dlopen libnvinfer.so.11 / .so.10 failed");
    fixture::write(root + "/onnx/io.json", fixture::replace(fixture::kIo, "\"family\": \"flux\"", "\"family\": \"wan\""));
    CHECK_THROWS_WITH(adatsq::Runner(root, {}), "family wan; the C++ runner drives flux graphs only");
    CHECK_DONE();
}
