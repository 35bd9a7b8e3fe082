// adatsq_run: the whole denoising loop of a compiled output directory with TensorRT (runner.h).
//   adatsq_run OUT_DIR [--inputs DIR] [--out latents.f32] [--plugin LIB] [--no-graphs]
// Inputs: DIR/<name>.bin holds input <name> (io.json) as raw little-endian data of its opt shape; absent files
// leave zeros (the initial latents are DIR/hidden_states.bin, the packed noise). Writes the final latents as raw
// float32. Every failure is one line on stderr and exit status 1 (e.g. no libnvinfer on the machine).
// COMPILED against the TensorRT 11.1 headers; never run against TensorRT.
#include "adatsq/runner.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sys/stat.h>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s OUT_DIR [--inputs DIR] [--out FILE] [--plugin LIB] [--no-graphs]\n", argv[0]);
        return 2;
    }
    std::string inputs, out = "latents.f32";
    adatsq::RunnerOptions opts;
    for (int i = 2; i < argc; ++i) {
        std::string const a = argv[i];
        if (a == "--inputs" && i + 1 < argc) inputs = argv[++i];
        else if (a == "--out" && i + 1 < argc) out = argv[++i];
        else if (a == "--plugin" && i + 1 < argc) opts.pluginLibrary = argv[++i];
        else if (a == "--no-graphs") opts.cudaGraphs = false;
        else {
            std::fprintf(stderr, "adatsq_run: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    try {
        adatsq::Runner runner(argv[1], opts);
        for (auto const& t : runner.outputDir().io.inputs) {
            std::string const path = inputs + "/" + t.name + ".bin";
            struct stat sb {};
            if (inputs.empty() || stat(path.c_str(), &sb) != 0) continue;
            std::ifstream f(path, std::ios::binary);
            std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
            runner.setInput(t.name, data.data(), data.size());
        }
        runner.run();
        std::vector<float> const x = runner.latents();
        std::ofstream(out, std::ios::binary).write(reinterpret_cast<char const*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
        std::printf("adatsq_run: %d steps, weights %zu bytes (one copy), scratch %zu bytes (shared), latents -> %s\n",
                    runner.outputDir().schedule.steps, runner.weightBytes(), runner.scratchBytes(), out.c_str());
    } catch (std::exception const& e) {
        std::fprintf(stderr, "adatsq_run: %s\n", e.what());
        return 1;
    }
    return 0;
}
