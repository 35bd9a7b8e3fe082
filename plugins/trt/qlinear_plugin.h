// adatsq::QLinear v1 -- TensorRT IPluginV3 (IPluginV3OneCore/Build/Runtime) over the CUDA kernels of
// plugins/csrc/qlinear_kernels.h (adatsq_qlinear_launch). DESIGN.md contract 1; ONNX node: plugins/onnx_op.py.
//
// Compiled (static and dynamic variants) against the TensorRT 11.1.0.106 public headers; NEVER RUN against a
// TensorRT runtime (reference/tensorrt.md section 2 for the API facts). Build: see CMakeLists.txt.
//
// Inputs (ONNX order): x [..., K] fp32/fp16/bf16; w packed bytes [N, K*w_bits/8]; w_scale fp16 [N, K/G]; bias
// fp32 [N] (optional); had_m; had_p. w is accepted as UINT8 or INT8 (the same bytes): the TensorRT-ready graphs
// (onnx/config_NN.trt.onnx) make every weight a network INPUT, which keeps UINT8 (only UINT8 initializers are
// converted to INT32 by the parser), so w arrives as UINT8; INT8 stays accepted for graphs that export it so.
// An absent bias (empty ONNX input name) is assumed to be dropped by the parser, so the plugin accepts 6 inputs
// (with bias) or 5 (without) -- UNVERIFIED against the parser. had_m/had_p are not read: the kernel builds the rotation from rotation_m and K. Output y [..., N],
// dtype of x restricted to fp32 or bf16 (the kernel writes only those).
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace adatsq {

struct QLinearParams {
    int32_t a_bits{16};
    int32_t w_bits{4};
    int32_t group_size{128};
    int32_t rotate{0};
    int32_t rotation_m{1};
};

class QLinearPlugin : public nvinfer1::IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime {
public:
    explicit QLinearPlugin(QLinearParams const& p);
    ~QLinearPlugin() override;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    int32_t ensureHadamard() noexcept;  // H_m on the device (once per plugin object), none when m == 1

    QLinearParams mParams;
    int8_t* mHm{nullptr};  // device, m*m
    int32_t mHmOrder{0};
    int32_t mNbInputs{6};  // 6 with bias, 5 without
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFc{};
};

class QLinearPluginCreator : public nvinfer1::IPluginCreatorV3One {
public:
    QLinearPluginCreator();
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFc{};
};

}  // namespace adatsq
