// The C++ engine-switching runner (needs the TensorRT headers and CUDA; TensorRT itself is loaded at run time).
//
// COMPILED against the TensorRT 11.1.0.106 public headers; NEVER RUN against a TensorRT runtime (none can be
// installed where it was written). What it does, in order:
//   1. dlopen libnvinfer (libnvinfer.so.11, then .so.10; $ADATSQ_NVINFER overrides) and dlsym the extern "C"
//      entry point createInferRuntime_INTERNAL (NvInferRuntime.h): no link dependency on TensorRT, and one clear
//      error line when it is missing; then dlopen the plugin library (static-registration variant, which
//      registers adatsq::QLinear with the registry of the libnvinfer already loaded);
//   2. validate the output directory (artifacts.h) and deserialize each configuration's plan once;
//   3. upload every weight of weights.safetensors once (io.json weight_inputs) and bind the same device buffer
//      to each engine's weight input; one scratch buffer of max getDeviceMemorySizeV2() for all contexts,
//      created with ExecutionContextAllocationStrategy::kUSER_MANAGED and setDeviceMemoryV2;
//   4. per configuration: set input shapes (io.json opt shapes), bind fixed I/O addresses, one warm-up
//      enqueueV3, then capture one CUDA graph;
//   5. run(): for each step, fill the timestep input, launch the graph of schedule.step_configs[step], apply the
//      Euler update x <- x + (sigma_{i+1} - sigma_i) v in place on the latent input -- all on one stream, no
//      host synchronisation inside the loop (the caller synchronises after).
// Only family "flux" graphs (latent input hidden_states, timestep input = t/1000, output the velocity) and
// FlowMatchEulerDiscreteScheduler schedules are accepted; float32 latent/timestep/output only.
#pragma once

#include "adatsq/artifacts.h"

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace adatsq {

class TensorRtError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct RunnerOptions {
    std::string pluginLibrary;  // "" = <out>/plugins/libadatsq_trt_plugins.so
    bool cudaGraphs{true};
};

class Runner {
public:
    Runner(std::string const& outDir, RunnerOptions const& options);
    ~Runner();
    Runner(Runner const&) = delete;
    Runner& operator=(Runner const&) = delete;

    // Copies host data into input `name` (io.json inputs; the shape is the input's opt shape). Synchronous.
    void setInput(std::string const& name, void const* host, size_t bytes);
    // The whole denoising loop on the runner's stream; returns after enqueueing (no host sync inside).
    void run();
    // Synchronises the stream and returns the latents (the hidden_states input after the last update).
    std::vector<float> latents();

    OutputDir const& outputDir() const;
    size_t scratchBytes() const;
    size_t weightBytes() const;

private:
    struct Impl;
    std::unique_ptr<Impl> mImpl;
};

}  // namespace adatsq
