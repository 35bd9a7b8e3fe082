// Runner implementation (runner.h). The only file that includes NvInfer headers. NEVER RUN against TensorRT.
#include "adatsq/runner.h"

#include "adatsq/euler.h"

#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace adatsq {
namespace {

void cuda(cudaError_t e, char const* what) {
    if (e != cudaSuccess) throw TensorRtError(std::string(what) + ": " + cudaGetErrorString(e));
}

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
    }
};

using CreateRuntimeFn = void* (*)(void*, int32_t);

// libnvinfer loaded at run time: createInferRuntime_INTERNAL is the extern "C" factory behind
// nvinfer1::createInferRuntime (NvInferRuntime.h), called with the header's NV_TENSORRT_VERSION.
struct NvInfer {
    void* handle{nullptr};
    CreateRuntimeFn createRuntime{nullptr};
    std::string loaded;

    NvInfer() {
        std::vector<std::string> names;
        if (char const* env = std::getenv("ADATSQ_NVINFER")) names.emplace_back(env);
        names.insert(names.end(), {"libnvinfer.so.11", "libnvinfer.so.10"});
        std::string errors;
        for (auto const& n : names) {
            handle = dlopen(n.c_str(), RTLD_NOW | RTLD_GLOBAL);  // global: the plugin library finds it too
            if (handle != nullptr) {
                loaded = n;
                break;
            }
            errors += std::string(errors.empty() ? "" : "; ") + dlerror();
        }
        if (handle == nullptr)
            throw TensorRtError("TensorRT runtime not found (dlopen libnvinfer.so.11 / .so.10 failed: " + errors + "); install TensorRT 10/11 or set ADATSQ_NVINFER");
        createRuntime = reinterpret_cast<CreateRuntimeFn>(dlsym(handle, "createInferRuntime_INTERNAL"));
        if (createRuntime == nullptr) throw TensorRtError(loaded + " has no createInferRuntime_INTERNAL");
    }
};

struct DeviceBuffer {
    void* ptr{nullptr};
    size_t bytes{0};
    explicit DeviceBuffer(size_t n) : bytes(n) { cuda(cudaMalloc(&ptr, n == 0 ? 1 : n), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

int64_t volume(std::vector<int64_t> const& s) {
    int64_t v = 1;
    for (int64_t d : s) v *= d;
    return v;
}

nvinfer1::Dims dims(std::vector<int64_t> const& s) {
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(s.size());
    for (size_t i = 0; i < s.size(); ++i) d.d[i] = s[i];
    return d;
}

}  // namespace

struct Runner::Impl {
    OutputDir dir;
    Logger logger;
    std::unique_ptr<NvInfer> nvinfer;
    void* plugin{nullptr};
    nvinfer1::IRuntime* runtime{nullptr};
    std::map<int, nvinfer1::ICudaEngine*> engines;
    std::map<int, nvinfer1::IExecutionContext*> contexts;
    std::map<std::string, std::unique_ptr<DeviceBuffer>> weights;  // safetensors key -> its one buffer
    std::unique_ptr<DeviceBuffer> scratch;
    std::map<std::string, std::unique_ptr<DeviceBuffer>> inputs;   // io.json inputs (opt shapes)
    std::unique_ptr<DeviceBuffer> velocity;                        // the output, shared by all engines
    std::unique_ptr<DeviceBuffer> sigmas, timesteps;               // device copies, indexed by step
    std::map<int, cudaGraphExec_t> graphs;
    cudaStream_t stream{nullptr};
    size_t weightBytes{0};
    int64_t latentElems{0}, timestepElems{0};
    bool useGraphs{true};

    ~Impl() {
        for (auto& g : graphs) cudaGraphExecDestroy(g.second);
        for (auto& c : contexts) delete c.second;
        for (auto& e : engines) delete e.second;
        delete runtime;
        if (stream != nullptr) cudaStreamDestroy(stream);
    }

    void loadWeights() {
        std::ifstream f(dir.root + "/onnx/weights.safetensors", std::ios::binary);
        std::vector<char> host;
        for (WeightInput const& w : dir.io.weightInputs) {
            if (weights.count(w.key) != 0) continue;  // one buffer per key, however many inputs name it
            SafetensorsEntry const& e = dir.weights.tensors.at(w.key);
            host.resize(e.end - e.begin);
            f.seekg(static_cast<std::streamoff>(dir.weights.dataOffset + e.begin));
            if (!f.read(host.data(), static_cast<std::streamsize>(host.size()))) throw ArtifactError(dir.root + "/onnx/weights.safetensors: cannot read " + w.key);
            auto buf = std::make_unique<DeviceBuffer>(host.size());
            cuda(cudaMemcpy(buf->ptr, host.data(), host.size(), cudaMemcpyHostToDevice), "weight upload");
            weightBytes += host.size();
            weights.emplace(w.key, std::move(buf));
        }
    }

    void bind(int config) {
        nvinfer1::ICudaEngine* engine = engines.at(config);
        nvinfer1::IExecutionContext* ctx = contexts.at(config);
        std::map<std::string, std::string> weightKey;
        for (WeightInput const& w : dir.io.weightInputs) weightKey[w.name] = w.key;
        for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
            std::string const name = engine->getIOTensorName(i);
            std::string const where = "configuration " + std::to_string(config) + ": engine tensor " + name;
            void* addr = nullptr;
            if (engine->getTensorIOMode(name.c_str()) == nvinfer1::TensorIOMode::kOUTPUT) {
                if (name != dir.io.outputName) throw TensorRtError(where + " is not io.json's output " + dir.io.outputName);
                if (engine->getTensorDataType(name.c_str()) != nvinfer1::DataType::kFLOAT) throw TensorRtError(where + ": the runner needs a float32 output");
                addr = velocity->ptr;
            } else if (weightKey.count(name) != 0) {
                addr = weights.at(weightKey[name])->ptr;
            } else if (inputs.count(name) != 0) {
                TensorSpec const* spec = dir.io.input(name);
                if (!ctx->setInputShape(name.c_str(), dims(spec->optShape))) throw TensorRtError(where + ": setInputShape rejected the opt shape");
                addr = inputs.at(name)->ptr;
            } else {
                throw TensorRtError(where + " is neither an io.json input nor a weight input");
            }
            if (!ctx->setTensorAddress(name.c_str(), addr)) throw TensorRtError(where + ": setTensorAddress failed");
        }
        if (ctx->inferShapes(0, nullptr) != 0) throw TensorRtError("configuration " + std::to_string(config) + ": input shapes not fully specified");
    }

    void capture(int config) {
        nvinfer1::IExecutionContext* ctx = contexts.at(config);
        if (!ctx->enqueueV3(stream)) throw TensorRtError("configuration " + std::to_string(config) + ": warm-up enqueueV3 failed");
        cuda(cudaStreamSynchronize(stream), "warm-up");  // setup, outside the loop
        if (!useGraphs) return;
        cudaGraph_t graph = nullptr;
        cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        bool const ok = ctx->enqueueV3(stream);
        cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
        if (!ok) throw TensorRtError("configuration " + std::to_string(config) + ": enqueueV3 failed under capture");
        cudaGraphExec_t exec = nullptr;
        cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
        cudaGraphDestroy(graph);
        graphs[config] = exec;
    }
};

Runner::Runner(std::string const& outDir, RunnerOptions const& options) : mImpl(std::make_unique<Impl>()) {
    Impl& m = *mImpl;
    m.useGraphs = options.cudaGraphs;
    m.dir = loadOutputDir(outDir, /*requirePlans=*/true);
    IoSpec const& io = m.dir.io;
    if (io.family != "flux") throw ArtifactError(outDir + "/onnx/io.json: family " + io.family + "; the C++ runner drives flux graphs only");
    std::vector<float> const sig = eulerSigmas(m.dir.schedule);
    for (char const* required : {"hidden_states", "timestep"}) {
        TensorSpec const* t = io.input(required);
        if (t == nullptr) throw ArtifactError(outDir + "/onnx/io.json: no input " + std::string(required));
        if (t->dtype != "float32") throw ArtifactError(outDir + "/onnx/io.json: input " + std::string(required) + " is " + t->dtype + "; the runner needs float32");
    }
    for (TensorSpec const& t : io.inputs)
        if (t.optShape.empty()) throw ArtifactError(outDir + "/onnx/io.json: input " + t.name + " has no opt_shape");

    m.nvinfer = std::make_unique<NvInfer>();
    std::string const pluginPath = options.pluginLibrary.empty() ? outDir + "/plugins/libadatsq_trt_plugins.so" : options.pluginLibrary;
    m.plugin = dlopen(pluginPath.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (m.plugin == nullptr) throw TensorRtError(std::string("plugin library: ") + dlerror());
    m.runtime = static_cast<nvinfer1::IRuntime*>(m.nvinfer->createRuntime(&m.logger, NV_TENSORRT_VERSION));
    if (m.runtime == nullptr) throw TensorRtError(m.nvinfer->loaded + ": createInferRuntime_INTERNAL returned null (version mismatch?)");
    cuda(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "cudaStreamCreate");

    size_t scratchBytes = 0;
    for (int c : distinctConfigs(m.dir.schedule)) {
        std::string const plan = readFile(m.dir.planPath(c));
        nvinfer1::ICudaEngine* e = m.runtime->deserializeCudaEngine(plan.data(), plan.size());
        if (e == nullptr) throw TensorRtError(m.dir.planPath(c) + ": TensorRT could not deserialize it");
        m.engines[c] = e;
        scratchBytes = std::max(scratchBytes, static_cast<size_t>(e->getDeviceMemorySizeV2()));
    }
    m.loadWeights();
    m.scratch = std::make_unique<DeviceBuffer>(scratchBytes);
    for (TensorSpec const& t : io.inputs) {
        size_t const bytes = static_cast<size_t>(volume(t.optShape)) * dtypeSize(t.dtype);
        m.inputs.emplace(t.name, std::make_unique<DeviceBuffer>(bytes));
        cuda(cudaMemset(m.inputs[t.name]->ptr, 0, bytes), "cudaMemset");
    }
    m.latentElems = volume(io.input("hidden_states")->optShape);
    m.timestepElems = volume(io.input("timestep")->optShape);
    m.velocity = std::make_unique<DeviceBuffer>(static_cast<size_t>(m.latentElems) * sizeof(float));
    std::vector<float> tvals;  // the timestep input of step i: t_i / 1000, as the flux family feeds it
    for (float t : m.dir.schedule.timesteps) tvals.push_back(t / 1000.0f);
    m.sigmas = std::make_unique<DeviceBuffer>(sig.size() * sizeof(float));
    m.timesteps = std::make_unique<DeviceBuffer>(tvals.size() * sizeof(float));
    cuda(cudaMemcpy(m.sigmas->ptr, sig.data(), sig.size() * sizeof(float), cudaMemcpyHostToDevice), "sigmas");
    cuda(cudaMemcpy(m.timesteps->ptr, tvals.data(), tvals.size() * sizeof(float), cudaMemcpyHostToDevice), "timesteps");
    for (auto& [c, e] : m.engines) {
        nvinfer1::IExecutionContext* ctx = e->createExecutionContext(nvinfer1::ExecutionContextAllocationStrategy::kUSER_MANAGED);
        if (ctx == nullptr) throw TensorRtError("configuration " + std::to_string(c) + ": createExecutionContext(kUSER_MANAGED) failed");
        ctx->setDeviceMemoryV2(m.scratch->ptr, static_cast<int64_t>(scratchBytes));  // one buffer, all contexts
        m.contexts[c] = ctx;
        m.bind(c);
    }
}

Runner::~Runner() = default;

void Runner::setInput(std::string const& name, void const* host, size_t bytes) {
    auto it = mImpl->inputs.find(name);
    if (it == mImpl->inputs.end()) throw ArtifactError("setInput: " + name + " is not an io.json input");
    if (bytes != it->second->bytes) throw ArtifactError("setInput: " + name + " takes " + std::to_string(it->second->bytes) + " bytes (opt shape), got " + std::to_string(bytes));
    cuda(cudaMemcpy(it->second->ptr, host, bytes, cudaMemcpyHostToDevice), "setInput");
}

void Runner::run() {
    Impl& m = *mImpl;
    if (m.graphs.empty())
        for (auto& kv : m.contexts) m.capture(kv.first);  // after setInput: warm-up runs on real inputs
    auto* x = static_cast<float*>(m.inputs.at("hidden_states")->ptr);
    auto* t = static_cast<float*>(m.inputs.at("timestep")->ptr);
    auto const* v = static_cast<float const*>(m.velocity->ptr);
    auto const* sig = static_cast<float const*>(m.sigmas->ptr);
    auto const* tv = static_cast<float const*>(m.timesteps->ptr);
    for (int i = 0; i < m.dir.schedule.steps; ++i) {  // no host synchronisation in here
        int const c = m.dir.schedule.stepConfigs[i];
        cuda(static_cast<cudaError_t>(adatsq_fill_timestep(t, tv, i, 1.0f, m.timestepElems, m.stream)), "timestep");
        if (m.useGraphs) {
            cuda(cudaGraphLaunch(m.graphs.at(c), m.stream), "cudaGraphLaunch");
        } else if (!m.contexts.at(c)->enqueueV3(m.stream)) {
            throw TensorRtError("configuration " + std::to_string(c) + ": enqueueV3 failed");
        }
        cuda(static_cast<cudaError_t>(adatsq_euler_step(x, v, sig, i, m.latentElems, m.stream)), "euler");
    }
}

std::vector<float> Runner::latents() {
    Impl& m = *mImpl;
    cuda(cudaStreamSynchronize(m.stream), "cudaStreamSynchronize");
    std::vector<float> out(static_cast<size_t>(m.latentElems));
    cuda(cudaMemcpy(out.data(), m.inputs.at("hidden_states")->ptr, out.size() * sizeof(float), cudaMemcpyDeviceToHost), "latents");
    return out;
}

OutputDir const& Runner::outputDir() const { return mImpl->dir; }
size_t Runner::scratchBytes() const { return mImpl->scratch->bytes; }
size_t Runner::weightBytes() const { return mImpl->weightBytes; }

}  // namespace adatsq
