#include "adatsq/artifacts.h"

#include "adatsq/json.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>

namespace adatsq {
namespace {

std::string baseName(std::string const& path) {
    size_t s = path.find_last_of('/');
    return s == std::string::npos ? path : path.substr(s + 1);
}

Json parseFile(std::string const& path) {
    try {
        return Json::parse(readFile(path));
    } catch (JsonError const& e) {
        throw ArtifactError(path + ": " + e.what());
    }
}

std::string shapeStr(std::vector<int64_t> const& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

std::vector<int64_t> intList(Json const& j, std::string const& what) {
    std::vector<int64_t> out;
    for (size_t i = 0; i < j.array(what).size(); ++i) out.push_back(j.array(what)[i].integer(what + "[" + std::to_string(i) + "]"));
    return out;
}

// Runs `f`, turning a JsonError into "path: message".
template <typename F>
auto guarded(std::string const& path, F f) -> decltype(f()) {
    try {
        return f();
    } catch (JsonError const& e) {
        throw ArtifactError(path + ": " + e.what());
    }
}

}  // namespace

std::string readFile(std::string const& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ArtifactError(path + ": cannot be read (missing?)");
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

size_t dtypeSize(std::string const& d) {
    if (d == "uint8" || d == "int8" || d == "U8" || d == "I8" || d == "bool" || d == "BOOL") return 1;
    if (d == "float16" || d == "bfloat16" || d == "F16" || d == "BF16") return 2;
    if (d == "float32" || d == "int32" || d == "F32" || d == "I32") return 4;
    if (d == "int64" || d == "I64" || d == "float64" || d == "F64") return 8;
    return 0;
}

std::string safetensorsDtype(std::string const& c) {
    static std::map<std::string, std::string> const m = {
        {"U8", "uint8"}, {"I8", "int8"}, {"F16", "float16"}, {"BF16", "bfloat16"}, {"F32", "float32"},
        {"I32", "int32"}, {"I64", "int64"}, {"BOOL", "bool"}};
    auto it = m.find(c);
    return it == m.end() ? "" : it->second;
}

Schedule loadSchedule(std::string const& path) {
    Json j = parseFile(path);
    return guarded(path, [&] {
        Schedule s;
        std::string const n = baseName(path);
        int64_t version = j.at("format_version", n).integer(n + ": format_version");
        if (version != 1) throw ArtifactError(path + ": format_version " + std::to_string(version) + " is not supported (this runner reads 1)");
        s.steps = static_cast<int>(j.at("steps", n).integer("steps"));
        if (s.steps <= 0) throw ArtifactError(path + ": steps must be positive, got " + std::to_string(s.steps));
        s.numConfigs = static_cast<int>(j.at("configs", n).array("configs").size());
        for (Json const& c : j.at("step_configs", n).array("step_configs")) s.stepConfigs.push_back(static_cast<int>(c.integer("step_configs[]")));
        if (static_cast<int>(s.stepConfigs.size()) != s.steps)
            throw ArtifactError(path + ": step_configs has " + std::to_string(s.stepConfigs.size()) + " entries for " + std::to_string(s.steps) + " steps");
        for (int i = 0; i < s.steps; ++i) {
            if (s.stepConfigs[i] < 0 || s.stepConfigs[i] >= s.numConfigs)
                throw ArtifactError(path + ": step " + std::to_string(i) + " names configuration " + std::to_string(s.stepConfigs[i]) + ", but only " + std::to_string(s.numConfigs) + " exist");
        }
        Json const& sampler = j.at("sampler", n);
        s.scheduler = sampler.at("scheduler", "sampler").string("sampler.scheduler");
        for (Json const& t : sampler.at("timesteps", "sampler").array("sampler.timesteps")) s.timesteps.push_back(static_cast<float>(t.number("sampler.timesteps[]")));
        if (static_cast<int>(s.timesteps.size()) != s.steps)
            throw ArtifactError(path + ": sampler.timesteps has " + std::to_string(s.timesteps.size()) + " entries for " + std::to_string(s.steps) + " steps");
        Json const& cfg = sampler.at("scheduler_config", "sampler");
        if (cfg.has("num_train_timesteps")) s.numTrainTimesteps = static_cast<float>(cfg.at("num_train_timesteps", "scheduler_config").number("sampler.scheduler_config.num_train_timesteps"));
        if (!(s.numTrainTimesteps > 0)) throw ArtifactError(path + ": sampler.scheduler_config.num_train_timesteps must be positive");
        for (char const* flag : {"stochastic_sampling", "invert_sigmas"}) {
            if (cfg.has(flag) && cfg.at(flag, "").isBool() && cfg.at(flag, "").boolean(flag))
                throw ArtifactError(path + ": sampler.scheduler_config." + flag + " = true is not the deterministic Euler update this runner implements");
        }
        if (cfg.has("shift_terminal") && !cfg.at("shift_terminal", "").isNull())
            throw ArtifactError(path + ": sampler.scheduler_config.shift_terminal is set; the runner's sigmas assume the unshifted terminal 0");
        return s;
    });
}

Manifest loadManifest(std::string const& path) {
    Json j = parseFile(path);
    return guarded(path, [&] {
        Manifest m;
        std::string const n = baseName(path);
        m.schemaVersion = static_cast<int>(j.at("schema_version", n).integer("schema_version"));
        if (m.schemaVersion != 1) throw ArtifactError(path + ": schema_version " + std::to_string(m.schemaVersion) + " is not supported (this runner reads 1)");
        Json const& sch = j.at("schedule", n);
        m.steps = static_cast<int>(sch.at("steps", "schedule").integer("schedule.steps"));
        for (Json const& c : sch.at("step_configs", "schedule").array("schedule.step_configs")) m.stepConfigs.push_back(static_cast<int>(c.integer("schedule.step_configs[]")));
        std::set<int> seen;
        for (Json const& e : j.at("engines", n).array("engines")) {
            ManifestEngine me;
            me.configId = static_cast<int>(e.at("config_id", "engines[]").integer("engines[].config_id"));
            if (!seen.insert(me.configId).second) throw ArtifactError(path + ": engines lists configuration " + std::to_string(me.configId) + " twice");
            if (e.has("onnx") && !e.at("onnx", "").isNull()) me.onnx = e.at("onnx", "").string("engines[].onnx");
            if (e.has("plan") && !e.at("plan", "").isNull()) me.plan = e.at("plan", "").string("engines[].plan");
            m.engines.push_back(me);
        }
        return m;
    });
}

TensorSpec const* IoSpec::input(std::string const& name) const {
    for (auto const& t : inputs)
        if (t.name == name) return &t;
    return nullptr;
}

IoSpec loadIo(std::string const& path) {
    Json j = parseFile(path);
    return guarded(path, [&] {
        IoSpec io;
        std::string const n = baseName(path);
        io.family = j.at("family", n).string("family");
        for (Json const& i : j.at("inputs", n).array("inputs")) {
            TensorSpec t;
            t.name = i.at("name", "inputs[]").string("inputs[].name");
            std::string const w = "inputs[" + t.name + "]";
            t.dtype = i.at("dtype", w).string(w + ".dtype");
            if (i.has("min_shape")) {
                t.minShape = intList(i.at("min_shape", w), w + ".min_shape");
                t.optShape = intList(i.at("opt_shape", w), w + ".opt_shape");
                t.maxShape = intList(i.at("max_shape", w), w + ".max_shape");
                size_t const rank = i.at("shape", w).array(w + ".shape").size();
                if (t.minShape.size() != rank || t.optShape.size() != rank || t.maxShape.size() != rank)
                    throw ArtifactError(path + ": " + w + ": min/opt/max_shape must have the rank of shape (" + std::to_string(rank) + ")");
                for (size_t d = 0; d < rank; ++d) {
                    if (!(1 <= t.minShape[d] && t.minShape[d] <= t.optShape[d] && t.optShape[d] <= t.maxShape[d]))
                        throw ArtifactError(path + ": " + w + ": needs 1 <= min <= opt <= max in every dimension, got " + shapeStr(t.minShape) + " " + shapeStr(t.optShape) + " " + shapeStr(t.maxShape));
                }
            }
            io.inputs.push_back(t);
        }
        Json const& out = j.at("output", n);
        io.outputName = out.at("name", "output").string("output.name");
        io.outputDtype = out.at("dtype", "output").string("output.dtype");
        std::set<std::string> names;
        if (j.has("weight_inputs")) {
            for (Json const& w : j.at("weight_inputs", n).array("weight_inputs")) {
                WeightInput wi;
                wi.name = w.at("name", "weight_inputs[]").string("weight_inputs[].name");
                std::string const what = "weight_inputs[" + wi.name + "]";
                wi.key = w.at("key", what).string(what + ".key");
                wi.dtype = w.at("dtype", what).string(what + ".dtype");
                wi.shape = intList(w.at("shape", what), what + ".shape");
                if (dtypeSize(wi.dtype) == 0) throw ArtifactError(path + ": " + what + ": unknown dtype " + wi.dtype);
                for (int64_t d : wi.shape)
                    if (d < 0) throw ArtifactError(path + ": " + what + ": weight shapes are static, got " + shapeStr(wi.shape));
                if (!names.insert(wi.name).second) throw ArtifactError(path + ": weight input " + wi.name + " is listed twice");
                io.weightInputs.push_back(wi);
            }
        }
        if (j.has("weight_inputs_per_config")) {
            Json const& per = j.at("weight_inputs_per_config", n);
            for (std::string const& k : per.keyOrder()) {
                int const c = std::stoi(k);
                for (Json const& v : per.at(k, "").array("weight_inputs_per_config[" + k + "]")) {
                    std::string const& name = v.string("weight_inputs_per_config[" + k + "][]");
                    if (names.count(name) == 0) throw ArtifactError(path + ": weight_inputs_per_config[" + k + "] names " + name + ", which is not in weight_inputs");
                    io.weightInputsPerConfig[c].push_back(name);
                }
            }
        }
        if (j.has("trt_graphs")) {
            Json const& g = j.at("trt_graphs", n);
            for (std::string const& k : g.keyOrder()) io.trtGraphs[std::stoi(k)] = g.at(k, "").string("trt_graphs[" + k + "]");
        }
        return io;
    });
}

Safetensors loadSafetensorsHeader(std::string const& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ArtifactError(path + ": cannot be read (missing?)");
    f.seekg(0, std::ios::end);
    uint64_t const size = static_cast<uint64_t>(f.tellg());
    f.seekg(0);
    unsigned char len8[8];
    if (size < 8 || !f.read(reinterpret_cast<char*>(len8), 8)) throw ArtifactError(path + ": shorter than the 8-byte safetensors header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len8[i];  // little-endian
    if (n > size - 8) throw ArtifactError(path + ": header length " + std::to_string(n) + " exceeds the file size");
    std::string header(n, '\0');
    f.read(&header[0], static_cast<std::streamsize>(n));
    Json j;
    try {
        j = Json::parse(header);
    } catch (JsonError const& e) {
        throw ArtifactError(path + ": safetensors header: " + e.what());
    }
    return guarded(path, [&] {
        Safetensors st;
        st.dataOffset = 8 + n;
        st.fileSize = size;
        for (std::string const& key : j.keyOrder()) {
            if (key == "__metadata__") continue;
            Json const& e = j.at(key, "header");
            SafetensorsEntry t;
            t.dtype = e.at("dtype", key).string(key + ".dtype");
            t.shape = intList(e.at("shape", key), key + ".shape");
            std::vector<int64_t> off = intList(e.at("data_offsets", key), key + ".data_offsets");
            if (off.size() != 2 || off[0] < 0 || off[1] < off[0]) throw ArtifactError(path + ": tensor " + key + ": bad data_offsets");
            t.begin = static_cast<uint64_t>(off[0]);
            t.end = static_cast<uint64_t>(off[1]);
            uint64_t elems = 1;
            for (int64_t d : t.shape) elems *= static_cast<uint64_t>(d);
            size_t const es = dtypeSize(t.dtype);
            if (es != 0 && elems * es != t.end - t.begin)
                throw ArtifactError(path + ": tensor " + key + ": " + std::to_string(t.end - t.begin) + " bytes for " + t.dtype + shapeStr(t.shape));
            if (st.dataOffset + t.end > size) throw ArtifactError(path + ": tensor " + key + " ends past the end of the file");
            st.tensors.emplace(key, t);
        }
        return st;
    });
}

std::string OutputDir::planPath(int config) const {
    for (auto const& e : manifest.engines)
        if (e.configId == config) return root + "/" + e.plan;
    return "";
}

OutputDir loadOutputDir(std::string const& root, bool requirePlans) {
    OutputDir d;
    d.root = root;
    d.manifest = loadManifest(root + "/manifest.json");
    d.schedule = loadSchedule(root + "/schedule.json");
    d.io = loadIo(root + "/onnx/io.json");
    std::string const mpath = root + "/manifest.json";
    if (d.manifest.steps != d.schedule.steps || d.manifest.stepConfigs != d.schedule.stepConfigs)
        throw ArtifactError(mpath + ": its schedule (steps, step_configs) differs from schedule.json's");
    for (int c : distinctConfigs(d.schedule)) {
        auto it = std::find_if(d.manifest.engines.begin(), d.manifest.engines.end(), [&](ManifestEngine const& e) { return e.configId == c; });
        if (it == d.manifest.engines.end()) throw ArtifactError(mpath + ": configuration " + std::to_string(c) + " is used by schedule.json but has no engine entry");
        if (requirePlans) {
            if (it->plan.empty()) throw ArtifactError(mpath + ": configuration " + std::to_string(c) + " has no TensorRT plan (plan: null; build the engines first)");
            struct stat sb {};
            if (stat((root + "/" + it->plan).c_str(), &sb) != 0) throw ArtifactError(root + "/" + it->plan + ": the plan of configuration " + std::to_string(c) + " is missing");
        }
    }
    d.weights = loadSafetensorsHeader(root + "/onnx/weights.safetensors");
    for (WeightInput const& w : d.io.weightInputs) {
        auto it = d.weights.tensors.find(w.key);
        if (it == d.weights.tensors.end()) throw ArtifactError(root + "/onnx/io.json: weight input " + w.name + ": key " + w.key + " is not in weights.safetensors");
        if (safetensorsDtype(it->second.dtype) != w.dtype || it->second.shape != w.shape)
            throw ArtifactError(root + "/onnx/io.json: weight input " + w.name + " is " + w.dtype + shapeStr(w.shape) + ", weights.safetensors has " + safetensorsDtype(it->second.dtype) + shapeStr(it->second.shape));
    }
    return d;
}

std::vector<int> distinctConfigs(Schedule const& s) {
    std::vector<int> out;
    for (int c : s.stepConfigs)
        if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    return out;
}

std::map<int, std::vector<int>> stepsOfConfig(Schedule const& s) {
    std::map<int, std::vector<int>> out;
    for (int i = 0; i < s.steps; ++i) out[s.stepConfigs[i]].push_back(i);
    return out;
}

std::vector<float> eulerSigmas(Schedule const& s) {
    if (s.scheduler != "FlowMatchEulerDiscreteScheduler")
        throw ArtifactError("schedule.json: sampler.scheduler is " + s.scheduler + "; the C++ runner implements only FlowMatchEulerDiscreteScheduler's Euler update");
    std::vector<float> sig;
    for (float t : s.timesteps) sig.push_back(t / s.numTrainTimesteps);
    sig.push_back(0.0f);
    return sig;
}

}  // namespace adatsq
