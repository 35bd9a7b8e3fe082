// The output directory as the C++ runner reads it (DESIGN.md contract 3): manifest.json, schedule.json,
// onnx/io.json and the header of weights.safetensors, each validated with a one-line error that names the file
// and the entry at fault. No TensorRT or CUDA header is needed here (built and tested without them).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace adatsq {

class ArtifactError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Schedule {
    int steps{0};
    int numConfigs{0};
    std::vector<int> stepConfigs;  // configuration id of every denoising step
    std::string scheduler;         // diffusers scheduler class
    std::vector<float> timesteps;  // the scheduler's t_i (float32, as in schedule.json)
    float numTrainTimesteps{1000.0f};
};

struct ManifestEngine {
    int configId{-1};
    std::string onnx;  // "" when null
    std::string plan;  // "" when null (no TensorRT at compile time)
};

struct Manifest {
    int schemaVersion{0};
    int steps{0};
    std::vector<int> stepConfigs;
    std::vector<ManifestEngine> engines;
};

struct TensorSpec {
    std::string name;
    std::string dtype;
    std::vector<int64_t> minShape, optShape, maxShape;  // empty when io.json has no ranges
};

struct WeightInput {
    std::string name;  // engine input
    std::string key;   // tensor in weights.safetensors
    std::string dtype;
    std::vector<int64_t> shape;
};

struct IoSpec {
    std::string family;
    std::vector<TensorSpec> inputs;
    std::string outputName, outputDtype;
    std::vector<WeightInput> weightInputs;
    std::map<int, std::vector<std::string>> weightInputsPerConfig;
    std::map<int, std::string> trtGraphs;
    TensorSpec const* input(std::string const& name) const;
};

struct SafetensorsEntry {
    std::string dtype;  // "U8", "I8", "F16", "BF16", "F32", ...
    std::vector<int64_t> shape;
    uint64_t begin{0}, end{0};  // byte range relative to dataOffset
};

struct Safetensors {
    uint64_t dataOffset{0};  // 8 + header length
    uint64_t fileSize{0};
    std::map<std::string, SafetensorsEntry> tensors;
};

Schedule loadSchedule(std::string const& path);
Manifest loadManifest(std::string const& path);
IoSpec loadIo(std::string const& path);
Safetensors loadSafetensorsHeader(std::string const& path);

// Bytes per element of an io.json dtype name or a safetensors code; 0 if unknown.
size_t dtypeSize(std::string const& dtype);
// io.json dtype name of a safetensors code ("U8" -> "uint8"); "" if unknown.
std::string safetensorsDtype(std::string const& code);

// The whole directory, cross-checked: the manifest's schedule equals schedule.json's; every configuration the
// schedule uses has a manifest engine (and, with requirePlans, a plan file); every weight input is in
// weights.safetensors with io.json's dtype and shape.
struct OutputDir {
    std::string root;
    Manifest manifest;
    Schedule schedule;
    IoSpec io;
    Safetensors weights;
    std::string planPath(int config) const;  // root + "/" + the manifest's plan of config
};
OutputDir loadOutputDir(std::string const& root, bool requirePlans);

// step -> configuration: the distinct configurations in first-use order, and the steps of each.
std::vector<int> distinctConfigs(Schedule const& s);
std::map<int, std::vector<int>> stepsOfConfig(Schedule const& s);

// sigma_i = t_i / num_train_timesteps (float32), i < steps, and sigma_steps = 0: the flow-matching Euler
// update x <- x + (sigma_{i+1} - sigma_i) v of FlowMatchEulerDiscreteScheduler (diffusers), whose timesteps are
// sigma * num_train_timesteps. Only that scheduler is accepted (ArtifactError otherwise).
std::vector<float> eulerSigmas(Schedule const& s);

std::string readFile(std::string const& path);  // throws ArtifactError naming the path

}  // namespace adatsq
