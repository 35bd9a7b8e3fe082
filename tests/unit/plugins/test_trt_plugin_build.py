"""The TensorRT plugin (plugins/trt) compiles against the TensorRT headers, links no TensorRT library, and
registers ``adatsq::QLinear`` v1 under namespace "adatsq" (static variant) or hands it out via ``getCreators``
(dynamic variant).

No TensorRT runtime exists here, so registration is exercised against a stand-in: a library with the soname
``libnvinfer.so.11`` written below, whose ``getPluginRegistry()`` returns an ``nvinfer1::IPluginRegistry`` that
records each ``registerCreator(creator, namespace)``. A host program loads that stand-in RTLD_LOCAL (as Triton's
tensorrt backend loads libnvinfer), then the plugin library, and checks what was registered; then it drives the
creator and the plugin through their header interfaces (fields, format negotiation of the weight input, output
types). What this does NOT show: that a real TensorRT accepts the plugin, builds or runs it.

The plugin is built with ``-DADATSQ_LINK_KERNELS=OFF`` (the CUDA kernel entry points stay undefined; they are
never called here, and the library is loaded lazily): the kernels' own build is tests/unit/plugins/
test_csrc_build.py. Headers: ``$TENSORRT_ROOT/include``, default ``../tensorrt`` beside the repository; the test
skips, saying so, where they or cmake/g++/the CUDA runtime headers are absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.tensorrt import ROOT, TRT_ROOT

from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE, PLUGIN_FIELDS, PLUGIN_VERSION

CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))


def _missing() -> str | None:
    if not (TRT_ROOT / "include" / "NvInferRuntime.h").is_file():
        return f"TensorRT headers not found at {TRT_ROOT}/include (set TENSORRT_ROOT): plugin not compiled"
    for tool in ("cmake", "g++"):
        if shutil.which(tool) is None:
            return f"{tool} not found: plugin not compiled"
    if not (CUDA_HOME / "include" / "cuda_runtime.h").is_file():
        return f"CUDA runtime headers not found under {CUDA_HOME} (set CUDA_HOME): plugin not compiled"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")

FAKE_NVINFER = r"""
// Stand-in for libnvinfer's getPluginRegistry(): records registerCreator calls (test only).
#include <NvInferRuntime.h>
#include <string>
#include <vector>
using namespace nvinfer1;
namespace {
struct Entry { IPluginCreatorInterface* creator; std::string ns; };
std::vector<Entry>& entries() { static std::vector<Entry> e; return e; }
class RecordingRegistry : public IPluginRegistry {
public:
    bool registerCreator(IPluginCreatorInterface& c, AsciiChar const* const ns) noexcept override {
        entries().push_back({&c, ns != nullptr ? ns : "<null>"});
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override { *n = 0; return nullptr; }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override { return nullptr; }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return false; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return -1; }
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override { *n = 0; return nullptr; }
};
}  // namespace
extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept {
    static RecordingRegistry* r = new RecordingRegistry();
    return r;
}
extern "C" __attribute__((visibility("default"))) int fakeCount() { return static_cast<int>(entries().size()); }
extern "C" __attribute__((visibility("default"))) char const* fakeNamespace(int i) { return entries()[i].ns.c_str(); }
extern "C" __attribute__((visibility("default"))) IPluginCreatorInterface* fakeCreator(int i) { return entries()[i].creator; }
"""

HOST = r"""
// Loads the plugin library (after the stand-in libnvinfer, for mode "static") and prints what it registered,
// then drives the creator and one plugin through the TensorRT header interfaces (test only).
#include <NvInferRuntime.h>
#include <dlfcn.h>
#include <cstdio>
#include <cstring>
using namespace nvinfer1;
static int fail(char const* what) { std::printf("FAIL %s\n", what); return 1; }
static DynamicPluginTensorDesc desc(DataType t) {
    DynamicPluginTensorDesc d{};
    d.desc.type = t;
    d.desc.format = TensorFormat::kLINEAR;
    return d;
}
int main(int argc, char** argv) {
    if (argc != 4) return fail("usage: host MODE FAKE_NVINFER PLUGIN");
    char const* mode = argv[1];
    void* fake = nullptr;
    if (std::strcmp(mode, "nolib") != 0) {
        fake = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
        if (fake == nullptr) return fail(dlerror());
    }
    void* lib = dlopen(argv[3], RTLD_LAZY | RTLD_LOCAL);
    if (lib == nullptr) return fail(dlerror());
    if (std::strcmp(mode, "nolib") == 0) { std::printf("LOADED\n"); return 0; }
    auto count = reinterpret_cast<int (*)()>(dlsym(fake, "fakeCount"));
    auto ns = reinterpret_cast<char const* (*)(int)>(dlsym(fake, "fakeNamespace"));
    auto registered = reinterpret_cast<IPluginCreatorInterface* (*)(int)>(dlsym(fake, "fakeCreator"));
    std::printf("REGISTERED %d\n", count());
    IPluginCreatorInterface* iface = nullptr;
    if (std::strcmp(mode, "static") == 0) {
        if (count() != 1) return fail("static registration count");
        std::printf("REGISTERED_NAMESPACE %s\n", ns(0));
        iface = registered(0);
    } else {
        auto get = reinterpret_cast<IPluginCreatorInterface* const* (*)(int32_t&)>(dlsym(lib, "getCreators"));
        if (get == nullptr) return fail("no getCreators");
        int32_t n = -1;
        IPluginCreatorInterface* const* creators = get(n);
        std::printf("GETCREATORS %d\n", n);
        if (n != 1) return fail("getCreators count");
        iface = creators[0];
    }
    std::printf("INTERFACE %s\n", iface->getInterfaceInfo().kind);
    if (std::strcmp(iface->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) return fail("creator kind");
    auto* creator = static_cast<IPluginCreatorV3One*>(iface);
    std::printf("CREATOR %s %s %s\n", creator->getPluginNamespace(), creator->getPluginName(), creator->getPluginVersion());
    PluginFieldCollection const* names = creator->getFieldNames();
    std::printf("FIELDS");
    for (int32_t i = 0; i < names->nbFields; ++i) std::printf(" %s", names->fields[i].name);
    std::printf("\n");
    int32_t vals[5] = {4, 3, 32, 1, 1};  // a_bits, w_bits, group_size, rotate, rotation_m
    PluginField f[5];
    for (int32_t i = 0; i < 5; ++i) f[i] = PluginField(names->fields[i].name, &vals[i], PluginFieldType::kINT32, 1);
    PluginFieldCollection fc{5, f};
    IPluginV3* plugin = creator->createPlugin("q", &fc, TensorRTPhase::kBUILD);
    if (plugin == nullptr) return fail("createPlugin");
    vals[0] = 5;  // a_bits 5 is no contract width
    std::printf("REJECTS_A5 %d\n", creator->createPlugin("q", &fc, TensorRTPhase::kBUILD) == nullptr);
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* rt = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    if (core == nullptr || build == nullptr || rt == nullptr) return fail("capabilities");
    std::printf("PLUGIN %s %s %s\n", core->getPluginNamespace(), core->getPluginName(), core->getPluginVersion());
    // x, w, w_scale, bias, had_m, had_p, y
    DynamicPluginTensorDesc io[7] = {desc(DataType::kFLOAT), desc(DataType::kUINT8), desc(DataType::kHALF),
                                     desc(DataType::kFLOAT), desc(DataType::kFLOAT), desc(DataType::kFLOAT),
                                     desc(DataType::kFLOAT)};
    std::printf("W_UINT8 %d\n", build->supportsFormatCombination(1, io, 6, 1));
    io[1].desc.type = DataType::kINT8;
    std::printf("W_INT8 %d\n", build->supportsFormatCombination(1, io, 6, 1));
    io[1].desc.type = DataType::kINT32;
    std::printf("W_INT32 %d\n", build->supportsFormatCombination(1, io, 6, 1));
    io[0].desc.type = DataType::kHALF;
    std::printf("X_HALF %d\n", build->supportsFormatCombination(0, io, 6, 1));
    DataType in[6] = {DataType::kBF16, DataType::kUINT8, DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
    DataType out = DataType::kFLOAT;
    build->getOutputDataTypes(&out, 1, in, 6);
    std::printf("OUT_BF16 %d\n", out == DataType::kBF16);
    std::printf("SERIALIZED %d\n", rt->getFieldsToSerialize()->nbFields);
    delete plugin;
    std::printf("OK\n");
    return 0;
}
"""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300, cwd=cwd)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("trt_plugin")
    build = tmp / "build"
    _run(["cmake", "-S", str(ROOT / "plugins" / "trt"), "-B", str(build), f"-DTENSORRT_ROOT={TRT_ROOT}",
          "-DADATSQ_LINK_KERNELS=OFF", "-DCMAKE_BUILD_TYPE=Release"])  # fmt: skip
    _run(["cmake", "--build", str(build), "-j2"])
    inc = [f"-I{TRT_ROOT / 'include'}", f"-I{CUDA_HOME / 'include'}"]
    (tmp / "fake.cpp").write_text(FAKE_NVINFER)
    (tmp / "host.cpp").write_text(HOST)
    fake_dir = tmp / "fake"
    fake_dir.mkdir()
    fake = fake_dir / "libnvinfer.so.11"
    _run(["g++", "-std=c++17", "-shared", "-fPIC", "-w", *inc, "-Wl,-soname,libnvinfer.so.11",
          str(tmp / "fake.cpp"), "-o", str(fake)])  # fmt: skip
    _run(["g++", "-std=c++17", "-w", *inc, str(tmp / "host.cpp"), "-o", str(tmp / "host")])
    return {
        "static": build / "libadatsq_trt_plugins.so",
        "dynamic": build / "libadatsq_trt_plugins_dynamic.so",
        "fake": fake,
        "host": tmp / "host",
    }


def _host(built: dict[str, Path], mode: str, lib: str) -> dict[str, str]:
    env = {**os.environ, "LD_LIBRARY_PATH": f"{CUDA_HOME / 'lib64'}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    res = subprocess.run(
        [str(built["host"]), mode, str(built["fake"]), str(built[lib])],
        capture_output=True, text=True, check=False, timeout=60, env=env,
    )  # fmt: skip
    assert res.returncode == 0, f"host {mode} failed:\n{res.stdout}\n{res.stderr}"
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in res.stdout.splitlines())
    lines["stderr"] = res.stderr
    return lines


@pytest.mark.parametrize("lib", ["static", "dynamic"])
def test_links_no_tensorrt_library(built: dict[str, Path], lib: str) -> None:
    """Neither library needs libnvinfer: no DT_NEEDED on it and no undefined getPluginRegistry (the static
    variant looks it up with dlsym); the only undefined non-system symbols are the CUDA runtime's and the kernel
    library's adatsq_* entry points (left out by ADATSQ_LINK_KERNELS=OFF)."""
    needed = _run(["readelf", "-d", str(built[lib])])
    assert "libnvinfer" not in needed
    undefined = _run(["nm", "-D", "--undefined-only", str(built[lib])]).split()
    assert "getPluginRegistry" not in undefined
    ours = {s for s in undefined if s.startswith("adatsq_")}
    assert ours == {"adatsq_hadamard_factors", "adatsq_paley_matrix", "adatsq_qlinear_launch",
                    "adatsq_qlinear_workspace_size", "adatsq_weight_only_gemv"}  # fmt: skip
    defined = _run(["nm", "-D", "--defined-only", str(built[lib])])
    assert ("getCreators" in defined) == (lib == "dynamic")


def _check_creator_and_plugin(out: dict[str, str]) -> None:
    assert out["INTERFACE"] == "PLUGIN CREATOR_V3ONE"
    assert out["CREATOR"].split() == [DOMAIN, OP_TYPE, PLUGIN_VERSION]
    assert tuple(out["FIELDS"].split()) == PLUGIN_FIELDS
    assert out["PLUGIN"].split() == [DOMAIN, OP_TYPE, PLUGIN_VERSION]
    assert out["REJECTS_A5"] == "1"
    # the packed weight arrives as a UINT8 network input (or INT8); never as the parser's INT32 conversion
    assert (out["W_UINT8"], out["W_INT8"], out["W_INT32"]) == ("1", "1", "0")
    assert out["X_HALF"] == "0"  # the kernel writes fp32/bf16 only
    assert out["OUT_BF16"] == "1"
    assert out["SERIALIZED"] == str(len(PLUGIN_FIELDS))
    assert "OK" in out


def test_static_variant_registers_under_the_plugin_namespace(built: dict[str, Path]) -> None:
    out = _host(built, "static", "static")
    assert out["REGISTERED"] == "1"
    assert out["REGISTERED_NAMESPACE"] == DOMAIN  # not "" as REGISTER_TENSORRT_PLUGIN's registrar would
    _check_creator_and_plugin(out)


def test_dynamic_variant_registers_nothing_and_hands_out_its_creator(built: dict[str, Path]) -> None:
    out = _host(built, "dynamic", "dynamic")
    assert out["REGISTERED"] == "0"  # loadLibrary registers it; a static registration would make that fail
    assert out["GETCREATORS"] == "1"
    _check_creator_and_plugin(out)


def test_static_variant_without_libnvinfer_loads_and_says_why(built: dict[str, Path]) -> None:
    out = _host(built, "nolib", "static")
    assert "LOADED" in out
    assert "libnvinfer (getPluginRegistry) not found" in out["stderr"]
