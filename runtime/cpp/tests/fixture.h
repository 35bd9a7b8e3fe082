// A minimal valid output directory (manifest.json, schedule.json, onnx/io.json, onnx/weights.safetensors and
// empty plan files) written for the ctest programs; `mutate` hooks replace one file's text to make it bad.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace fixture {

inline std::string const kSchedule = R"({"format_version": 1, "model": "tiny-flux", "steps": 4,
 "configs": [[4, 4], [3, 3]], "step_configs": [0, 1, 1, 0],
 "sampler": {"scheduler": "FlowMatchEulerDiscreteScheduler",
             "scheduler_config": {"num_train_timesteps": 1000, "shift": 3.0},
             "guidance_scale": 3.5, "timesteps": [1000.0, 750.0, 500.0, 250.0]}})";

inline std::string const kManifest = R"({"schema_version": 1,
 "schedule": {"steps": 4, "step_configs": [0, 1, 1, 0]},
 "engines": [{"config_id": 0, "onnx": "onnx/config_00.onnx", "plan": "trt/config_00.plan"},
             {"config_id": 1, "onnx": "onnx/config_01.onnx", "plan": "trt/config_01.plan"}]})";

inline std::string const kIo = R"({"family": "flux",
 "inputs": [{"name": "hidden_states", "dtype": "float32", "shape": ["batch", "img_tokens", 4],
             "min_shape": [1, 4, 4], "opt_shape": [1, 4, 4], "max_shape": [4, 4, 4]},
            {"name": "timestep", "dtype": "float32", "shape": ["batch"],
             "min_shape": [1], "opt_shape": [1], "max_shape": [4]}],
 "output": {"name": "sample", "dtype": "float32", "shape": ["batch", "img_tokens", 4]},
 "weight_inputs": [{"name": "l.w_packed", "key": "l.w_packed", "dtype": "uint8", "shape": [2, 3]},
                   {"name": "l.w_scale", "key": "l.w_scale", "dtype": "float16", "shape": [2, 1]}],
 "weight_inputs_per_config": {"0": ["l.w_packed", "l.w_scale"], "1": ["l.w_packed", "l.w_scale"]},
 "trt_graphs": {"0": "config_00.trt.onnx", "1": "config_01.trt.onnx"}})";

inline std::string const kWeightsHeader =
    R"({"__metadata__": {"format": "pt"}, "l.w_packed": {"dtype": "U8", "shape": [2, 3], "data_offsets": [0, 6]},)"
    R"( "l.w_scale": {"dtype": "F16", "shape": [2, 1], "data_offsets": [6, 10]}})";

inline void write(std::string const& path, std::string const& text) { std::ofstream(path, std::ios::binary) << text; }

inline std::string safetensors(std::string const& header, size_t dataBytes) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    return out + header + std::string(dataBytes, '\x01');
}

// A fresh directory under $TMPDIR with every file valid.
inline std::string make() {
    char const* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/adatsq_cpp_XXXXXX";
    char* dir = mkdtemp(&tmpl[0]);
    std::string const root = dir;
    mkdir((root + "/onnx").c_str(), 0755);
    mkdir((root + "/trt").c_str(), 0755);
    write(root + "/schedule.json", kSchedule);
    write(root + "/manifest.json", kManifest);
    write(root + "/onnx/io.json", kIo);
    write(root + "/onnx/weights.safetensors", safetensors(kWeightsHeader, 10));
    write(root + "/trt/config_00.plan", "not a real plan");
    write(root + "/trt/config_01.plan", "not a real plan");
    return root;
}

// `text` with the first occurrence of `from` replaced by `to` (the test's way to break one entry).
inline std::string replace(std::string text, std::string const& from, std::string const& to) {
    size_t p = text.find(from);
    if (p == std::string::npos) std::abort();
    return text.replace(p, from.size(), to);
}

}  // namespace fixture
