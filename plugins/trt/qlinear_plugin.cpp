// adatsq::QLinear v1 TensorRT plugin; see qlinear_plugin.h. Compiled against the TensorRT 11.1.0.106 public
// headers (NVIDIA/TensorRT, outside the repository) with nvcc 13.0's host toolchain; never run against a
// TensorRT runtime (none can be installed where it was written).
#include "qlinear_plugin.h"

#include "qlinear_kernels.h"

#include <cstdio>
#include <cstring>
#include <new>

#ifdef ADATSQ_STATIC_REGISTRATION
#include <dlfcn.h>
#endif

using namespace nvinfer1;

namespace adatsq {
constexpr char const* kName = "QLinear";
constexpr char const* kVersion = "1";
constexpr char const* kNamespace = "adatsq";

namespace {

bool hasBias(int32_t nbInputs) { return nbInputs == 6; }

int kernelDtype(DataType t) {
    switch (t) {
    case DataType::kFLOAT: return ADATSQ_F32;
    case DataType::kHALF: return ADATSQ_F16;
    case DataType::kBF16: return ADATSQ_BF16;
    default: return -1;
    }
}

int64_t rowsOf(Dims const& d) {
    int64_t m = 1;
    for (int32_t i = 0; i + 1 < d.nbDims; ++i) m *= d.d[i];
    return m;
}

// Effective group and scratch sizes: q (M*K bytes) then s_x (M*(K/G) floats), 256-byte aligned.
}  // namespace

QLinearPlugin::QLinearPlugin(QLinearParams const& p) : mParams(p) {
    mFields = {
        PluginField("a_bits", &mParams.a_bits, PluginFieldType::kINT32, 1),
        PluginField("w_bits", &mParams.w_bits, PluginFieldType::kINT32, 1),
        PluginField("group_size", &mParams.group_size, PluginFieldType::kINT32, 1),
        PluginField("rotate", &mParams.rotate, PluginFieldType::kINT32, 1),
        PluginField("rotation_m", &mParams.rotation_m, PluginFieldType::kINT32, 1),
    };
    mFc.nbFields = static_cast<int32_t>(mFields.size());
    mFc.fields = mFields.data();
}

QLinearPlugin::~QLinearPlugin() {
    if (mHm != nullptr) cudaFree(mHm);
}

IPluginCapability* QLinearPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
    switch (type) {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* QLinearPlugin::clone() noexcept {
    auto* p = new (std::nothrow) QLinearPlugin(mParams);
    if (p != nullptr) p->mNbInputs = mNbInputs;
    return p;
}

char const* QLinearPlugin::getPluginName() const noexcept { return kName; }
char const* QLinearPlugin::getPluginVersion() const noexcept { return kVersion; }
char const* QLinearPlugin::getPluginNamespace() const noexcept { return kNamespace; }

int32_t QLinearPlugin::getNbOutputs() const noexcept { return 1; }

int32_t QLinearPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                       DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
    if ((nbInputs != 5 && nbInputs != 6) || nbOutputs != 1) return -1;
    mNbInputs = nbInputs;
    if (mParams.a_bits > 8 && mParams.rotate) return -1;  // a_bits = 16 layers are never rotated
    int64_t K = in[0].desc.dims.d[in[0].desc.dims.nbDims - 1];
    if (K > 0 && (K % mParams.group_size) != 0) return -1;
    return 0;
}

int32_t QLinearPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                          int32_t) const noexcept {
    if (nbOutputs != 1) return -1;
    outputTypes[0] = inputTypes[0];  // y has the dtype of x (fp32 or bf16, see supportsFormatCombination)
    return 0;
}

int32_t QLinearPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                                       DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept {
    if ((nbInputs != 5 && nbInputs != 6) || nbOutputs != 1) return -1;
    outputs[0] = inputs[0];                                   // [..., K] -> [..., N]
    outputs[0].d[inputs[0].nbDims - 1] = inputs[1].d[0];      // N = rows of the packed weight
    return 0;
}

bool QLinearPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                              int32_t) noexcept {
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;
    int32_t const out = nbInputs;  // the output's position
    bool const bias = hasBias(nbInputs);
    if (pos == 0) return d.type == DataType::kFLOAT || d.type == DataType::kBF16;
    if (pos == 1) return d.type == DataType::kUINT8 || d.type == DataType::kINT8;
    if (pos == 2) return d.type == DataType::kHALF;
    if (bias && pos == 3) return d.type == DataType::kFLOAT;
    if (pos == out) return d.type == inOut[0].desc.type;
    return d.type == DataType::kFLOAT;  // had_m, had_p (not read)
}

size_t QLinearPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t, DynamicPluginTensorDesc const*,
                                       int32_t) const noexcept {
    Dims const& mx = inputs[0].max;
    int64_t const K = mx.d[mx.nbDims - 1];
    int64_t const N = inputs[1].max.d[0];
    if (mParams.a_bits > 8) return 0;  // weight-only GEMV: no scratch
    return adatsq_qlinear_workspace_size(rowsOf(mx), N, K, mParams.group_size, mParams.a_bits, mParams.w_bits);
}

int32_t QLinearPlugin::onShapeChange(PluginTensorDesc const*, int32_t nbInputs, PluginTensorDesc const*,
                                     int32_t) noexcept {
    mNbInputs = nbInputs;  // enqueue() is not told the input count
    return (nbInputs == 5 || nbInputs == 6) ? 0 : -1;
}

int32_t QLinearPlugin::ensureHadamard() noexcept {
    // Called from attachToContext (not from enqueue: enqueue must stay graph-capturable, no malloc/sync).
    if (!mParams.rotate || mParams.rotation_m <= 1 || mHm != nullptr) return 0;
    int32_t const m = mParams.rotation_m;
    std::vector<int8_t> host(static_cast<size_t>(m) * m);
    if (adatsq_paley_matrix(m, host.data()) != 0) return -1;
    if (cudaMalloc(&mHm, host.size()) != cudaSuccess) return -1;
    if (cudaMemcpy(mHm, host.data(), host.size(), cudaMemcpyHostToDevice) != cudaSuccess) return -1;
    mHmOrder = m;
    return 0;
}

IPluginV3* QLinearPlugin::attachToContext(IPluginResourceContext*) noexcept {
    auto* p = new (std::nothrow) QLinearPlugin(mParams);
    if (p != nullptr) p->mNbInputs = mNbInputs;
    if (p != nullptr && p->ensureHadamard() != 0) {
        delete p;
        return nullptr;
    }
    return p;
}

int32_t QLinearPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                               void const* const* inputs, void* const* outputs, void* workspace,
                               cudaStream_t stream) noexcept {
    Dims const& xd = inputDesc[0].dims;
    int64_t const K = xd.d[xd.nbDims - 1];
    int64_t const M = rowsOf(xd);
    int64_t const N = inputDesc[1].dims.d[0];
    int const xType = kernelDtype(inputDesc[0].type);
    int const yType = kernelDtype(outputDesc[0].type);
    if (xType < 0 || (yType != ADATSQ_F32 && yType != ADATSQ_BF16)) return -1;
    int m = 1, p = static_cast<int>(K);
    if (mParams.rotate) {
        if (adatsq_hadamard_factors(K, &m, &p) != 0 || m != mParams.rotation_m) return -1;
    }
    float const* bias = hasBias(mNbInputs) ? static_cast<float const*>(inputs[3]) : nullptr;
    if (mParams.a_bits > 8) {  // a_bits = 16: weight-only GEMV over the packed weights, no workspace
        return adatsq_weight_only_gemv(inputs[0], xType, M, K, K, static_cast<uint8_t const*>(inputs[1]),
                                       mParams.w_bits, static_cast<uint16_t const*>(inputs[2]), bias, outputs[0],
                                       yType, N, mParams.group_size, stream);
    }
    // The workspace TensorRT passes holds getWorkspaceSize() for the maximum shape, >= this shape's need.
    size_t const wsBytes =
        adatsq_qlinear_workspace_size(M, N, K, mParams.group_size, mParams.a_bits, mParams.w_bits);
    return adatsq_qlinear_launch(inputs[0], xType, M, K, mParams.rotate, m, p, mHm, mParams.group_size,
                                 mParams.a_bits, static_cast<uint8_t const*>(inputs[1]), mParams.w_bits,
                                 static_cast<uint16_t const*>(inputs[2]), bias, outputs[0], yType, N, workspace,
                                 wsBytes, stream);
}

PluginFieldCollection const* QLinearPlugin::getFieldsToSerialize() noexcept { return &mFc; }

// --- creator ------------------------------------------------------------------------------------------------
QLinearPluginCreator::QLinearPluginCreator() {
    for (char const* n : {"a_bits", "w_bits", "group_size", "rotate", "rotation_m"}) {
        mFields.emplace_back(n, nullptr, PluginFieldType::kINT32, 1);
    }
    mFc.nbFields = static_cast<int32_t>(mFields.size());
    mFc.fields = mFields.data();
}

char const* QLinearPluginCreator::getPluginName() const noexcept { return kName; }
char const* QLinearPluginCreator::getPluginVersion() const noexcept { return kVersion; }
char const* QLinearPluginCreator::getPluginNamespace() const noexcept { return kNamespace; }
PluginFieldCollection const* QLinearPluginCreator::getFieldNames() noexcept { return &mFc; }

IPluginV3* QLinearPluginCreator::createPlugin(char const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept {
    QLinearParams p;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (f.data == nullptr || f.type != PluginFieldType::kINT32) continue;  // parser narrows INT to INT32
        int32_t const v = *static_cast<int32_t const*>(f.data);
        if (!std::strcmp(f.name, "a_bits")) p.a_bits = v;
        else if (!std::strcmp(f.name, "w_bits")) p.w_bits = v;
        else if (!std::strcmp(f.name, "group_size")) p.group_size = v;
        else if (!std::strcmp(f.name, "rotate")) p.rotate = v;
        else if (!std::strcmp(f.name, "rotation_m")) p.rotation_m = v;
    }
    bool const ok = (p.a_bits == 3 || p.a_bits == 4 || p.a_bits == 8 || p.a_bits == 16) &&
                    (p.w_bits == 3 || p.w_bits == 4 || p.w_bits == 8) && p.group_size > 0;
    return ok ? new (std::nothrow) QLinearPlugin(p) : nullptr;
}

}  // namespace adatsq

// --- registration -------------------------------------------------------------------------------------------
#ifdef ADATSQ_STATIC_REGISTRATION
// For trtexec --staticPlugins, Triton --backend-config=tensorrt,plugins=..., LD_PRELOAD, ctypes.CDLL: the creator
// registers itself when the library is loaded.
//
// Not REGISTER_TENSORRT_PLUGIN: that macro pastes its argument into a variable name (so it needs an unqualified
// name) and its PluginRegistrar calls registerCreator(instance, "") -- namespace "" while the creator reports
// "adatsq" (NvInferRuntime.h). Here the creator is registered with kNamespace explicitly. getPluginRegistry() is
// an extern "C" entry point of libnvinfer; it is looked up with dlsym at load time instead of linked, so the
// library has no link dependency on libnvinfer (every other TensorRT type used here is a header-only
// interface): the libnvinfer the host process already loaded is found with RTLD_NOLOAD (also when the host
// loaded it RTLD_LOCAL, as Triton's tensorrt backend does), else the first one the loader finds is loaded.
namespace {
using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*)() noexcept;

GetPluginRegistryFn findGetPluginRegistry() {
    if (void* sym = dlsym(RTLD_DEFAULT, "getPluginRegistry")) return reinterpret_cast<GetPluginRegistryFn>(sym);
    char const* const libs[] = {"libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer_lean.so.11",
                                "libnvinfer_lean.so.10", "libnvinfer.so"};
    for (int const mode : {RTLD_LAZY | RTLD_NOLOAD, RTLD_LAZY | RTLD_GLOBAL}) {
        for (char const* lib : libs) {
            void* handle = dlopen(lib, mode);
            if (handle == nullptr) continue;
            if (void* sym = dlsym(handle, "getPluginRegistry")) return reinterpret_cast<GetPluginRegistryFn>(sym);
        }
    }
    return nullptr;
}

struct StaticRegistrar {
    adatsq::QLinearPluginCreator creator;
    StaticRegistrar() {
        GetPluginRegistryFn const get = findGetPluginRegistry();
        IPluginRegistry* const registry = get != nullptr ? get() : nullptr;
        if (registry == nullptr) {
            std::fprintf(stderr, "adatsq plugin: libnvinfer (getPluginRegistry) not found; %s::%s not registered\n",
                         adatsq::kNamespace, adatsq::kName);
        } else if (!registry->registerCreator(creator, adatsq::kNamespace)) {
            std::fprintf(stderr, "adatsq plugin: registerCreator(%s::%s v%s) failed (already registered?)\n",
                         adatsq::kNamespace, adatsq::kName, adatsq::kVersion);
        }
    }
};
StaticRegistrar const gRegistrar{};
}  // namespace
#else
// For trtexec --dynamicPlugins / IPluginRegistry::loadLibrary, which registers each creator under its own
// getPluginNamespace() ("adatsq") and fails on creators already registered statically, hence a separate library
// without static registration. No TensorRT symbol is referenced.
extern "C" {
__attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static adatsq::QLinearPluginCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
__attribute__((visibility("default"))) void setLoggerFinder(ILoggerFinder*) {}
}
#endif
