// Loading and validating the output directory: a valid one, then one bad entry at a time, each rejected with a
// one-line error naming the file and the entry; the step -> configuration mapping and the Euler sigmas.
#include "adatsq/artifacts.h"

#include "check.h"
#include "fixture.h"

using namespace adatsq;

namespace {
// A fresh valid directory with file `rel` rewritten by replacing `from` with `to`.
std::string broken(std::string const& rel, std::string const& original, std::string const& from, std::string const& to) {
    std::string root = fixture::make();
    fixture::write(root + "/" + rel, fixture::replace(original, from, to));
    return root;
}
}  // namespace

int main() {
    std::string const root = fixture::make();
    OutputDir d = loadOutputDir(root, true);
    CHECK(d.schedule.steps == 4);
    CHECK(d.io.inputs.size() == 2 && d.io.input("timestep") != nullptr && d.io.input("nope") == nullptr);
    CHECK(d.io.input("hidden_states")->maxShape == (std::vector<int64_t>{4, 4, 4}));
    CHECK(d.io.weightInputs.size() == 2 && d.io.weightInputs[1].dtype == "float16");
    CHECK(d.io.weightInputsPerConfig.at(1).size() == 2 && d.io.trtGraphs.at(1) == "config_01.trt.onnx");
    CHECK(d.weights.tensors.at("l.w_scale").begin == 6 && d.weights.dataOffset == 8 + fixture::kWeightsHeader.size());
    CHECK(d.planPath(1) == root + "/trt/config_01.plan");

    // step -> configuration
    CHECK(distinctConfigs(d.schedule) == (std::vector<int>{0, 1}));
    CHECK(stepsOfConfig(d.schedule).at(0) == (std::vector<int>{0, 3}));
    CHECK(stepsOfConfig(d.schedule).at(1) == (std::vector<int>{1, 2}));
    std::vector<float> const sig = eulerSigmas(d.schedule);
    CHECK(sig == (std::vector<float>{1.0f, 0.75f, 0.5f, 0.25f, 0.0f}));

    using fixture::kIo, fixture::kManifest, fixture::kSchedule;
    // schedule.json
    CHECK_THROWS_WITH(loadOutputDir(broken("schedule.json", kSchedule, "\"step_configs\": [0, 1, 1, 0]", "\"step_configs\": [0, 1, 1]"), false),
                      "schedule.json: step_configs has 3 entries for 4 steps");
    CHECK_THROWS_WITH(loadOutputDir(broken("schedule.json", kSchedule, "[0, 1, 1, 0]", "[0, 1, 2, 0]"), false),
                      "schedule.json: step 2 names configuration 2, but only 2 exist");
    CHECK_THROWS_WITH(loadOutputDir(broken("schedule.json", kSchedule, "\"format_version\": 1", "\"format_version\": 2"), false),
                      "schedule.json: format_version 2 is not supported");
    CHECK_THROWS_WITH(loadOutputDir(broken("schedule.json", kSchedule, "\"steps\": 4", "\"steps\": \"4\""), false),
                      "schedule.json: steps must be a number, not a string");
    CHECK_THROWS_WITH(loadOutputDir(broken("schedule.json", kSchedule, ", 250.0]", "]"), false),
                      "schedule.json: sampler.timesteps has 3 entries for 4 steps");
    CHECK_THROWS_WITH(loadOutputDir(broken("schedule.json", kSchedule, "\"shift\": 3.0", "\"stochastic_sampling\": true"), false),
                      "sampler.scheduler_config.stochastic_sampling = true");
    CHECK_THROWS_WITH(loadOutputDir(broken("schedule.json", kSchedule, "{\"format_version\"", "{{\"format_version\""), false),
                      "schedule.json: invalid JSON at byte 1");
    {
        OutputDir u = loadOutputDir(broken("schedule.json", kSchedule, "FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler"), false);
        CHECK_THROWS_WITH(eulerSigmas(u.schedule), "sampler.scheduler is UniPCMultistepScheduler; the C++ runner implements only");
    }
    // manifest.json
    CHECK_THROWS_WITH(loadOutputDir(broken("manifest.json", kManifest, "[0, 1, 1, 0]", "[0, 0, 1, 0]"), false),
                      "manifest.json: its schedule (steps, step_configs) differs from schedule.json's");
    CHECK_THROWS_WITH(loadOutputDir(broken("manifest.json", kManifest, "\"config_id\": 1", "\"config_id\": 5"), false),
                      "manifest.json: configuration 1 is used by schedule.json but has no engine entry");
    CHECK_THROWS_WITH(loadOutputDir(broken("manifest.json", kManifest, "\"trt/config_01.plan\"", "null"), true),
                      "manifest.json: configuration 1 has no TensorRT plan (plan: null");
    CHECK(loadOutputDir(broken("manifest.json", kManifest, "\"trt/config_01.plan\"", "null"), false).manifest.engines[1].plan.empty());
    CHECK_THROWS_WITH(loadOutputDir(broken("manifest.json", kManifest, "trt/config_01.plan", "trt/gone.plan"), true),
                      "trt/gone.plan: the plan of configuration 1 is missing");
    CHECK_THROWS_WITH(loadOutputDir(broken("manifest.json", kManifest, "\"config_id\": 1", "\"config_id\": 0"), false),
                      "manifest.json: engines lists configuration 0 twice");
    // io.json
    CHECK_THROWS_WITH(loadOutputDir(broken("onnx/io.json", kIo, "\"max_shape\": [4, 4, 4]", "\"max_shape\": [4, 2, 4]"), false),
                      "io.json: inputs[hidden_states]: needs 1 <= min <= opt <= max in every dimension");
    CHECK_THROWS_WITH(loadOutputDir(broken("onnx/io.json", kIo, "\"min_shape\": [1], ", "\"min_shape\": [1, 1], "), false),
                      "io.json: inputs[timestep]: min/opt/max_shape must have the rank of shape (1)");
    CHECK_THROWS_WITH(loadOutputDir(broken("onnx/io.json", kIo, "\"key\": \"l.w_scale\"", "\"key\": \"l.gone\""), false),
                      "io.json: weight input l.w_scale: key l.gone is not in weights.safetensors");
    CHECK_THROWS_WITH(loadOutputDir(broken("onnx/io.json", kIo, "\"dtype\": \"uint8\"", "\"dtype\": \"int8\""), false),
                      "io.json: weight input l.w_packed is int8[2, 3], weights.safetensors has uint8[2, 3]");
    CHECK_THROWS_WITH(loadOutputDir(broken("onnx/io.json", kIo, "\"shape\": [2, 3]", "\"shape\": [2, -1]"), false),
                      "io.json: weight_inputs[l.w_packed]: weight shapes are static");
    CHECK_THROWS_WITH(loadOutputDir(broken("onnx/io.json", kIo, "\"1\": [\"l.w_packed\"", "\"1\": [\"l.other\""), false),
                      "io.json: weight_inputs_per_config[1] names l.other, which is not in weight_inputs");
    CHECK_THROWS_WITH(loadOutputDir(broken("onnx/io.json", kIo, "\"family\": \"flux\",", ""), false),
                      "io.json: io.json has no \"family\"");
    // weights.safetensors
    {
        std::string r = fixture::make();
        fixture::write(r + "/onnx/weights.safetensors", fixture::safetensors(fixture::kWeightsHeader, 9));
        CHECK_THROWS_WITH(loadOutputDir(r, false), "weights.safetensors: tensor l.w_scale ends past the end of the file");
        std::string bad = fixture::replace(fixture::kWeightsHeader, "[6, 10]", "[6, 9]");
        fixture::write(r + "/onnx/weights.safetensors", fixture::safetensors(bad, 10));
        CHECK_THROWS_WITH(loadOutputDir(r, false), "weights.safetensors: tensor l.w_scale: 3 bytes for F16[2, 1]");
        std::string s = fixture::safetensors(fixture::kWeightsHeader, 10);
        s[0] = '\xff';
        s[1] = '\xff';
        fixture::write(r + "/onnx/weights.safetensors", s);
        CHECK_THROWS_WITH(loadOutputDir(r, false), "exceeds the file size");
    }
    CHECK_THROWS_WITH(loadSchedule(root + "/missing.json"), "missing.json: cannot be read");
    CHECK_DONE();
}
