"""trtexec scripts (export/trtexec.py) from a real export: shape strings equal io.json's ranges, the ranges are
the compiled resolution's, every script passes ``bash -n``, and the scripts run against a FAKE trtexec that
records its arguments (TensorRT 10.x and 11.x help texts), so the version-dependent flags and the plugin-layer
check are exercised. The fake is not TensorRT: nothing here shows that trtexec builds these engines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.golden import config_graphs

from adatsq.core.models.registry import family_of, get_spec
from adatsq.core.schedule import load_schedule
from adatsq.export.onnx_export import load_quantized_model
from adatsq.export.trtexec import PLUGIN_LIBRARY, load_io, write_trtexec_scripts

FIXTURES = [
    "compiled_tiny_flux",
    pytest.param("compiled_tiny_wan", marks=pytest.mark.slow),
    "compiled_tiny_zimage",
]

HELP_10 = """  --stronglyTyped             Create a strongly typed network. (default = disabled)
  --enablePluginOverride      Set `kENABLE_PLUGIN_OVERRIDE` to true in the ONNX parser.
  --useCudaGraph              Use CUDA graph to capture engine execution and then launch inference
  --separateProfileRun        Do not attach the profiler in the benchmark run
"""
HELP_11 = """  --stronglyTyped                    [Deprecated] Strongly typed network is now enabled by default. This flag is a no-op.
  --enablePluginOverride             Set `kENABLE_PLUGIN_OVERRIDE` to true in the ONNX parser. This allows the ONNX parser to use
  --useCudaGraph              [Deprecated] CUDA graph is now enabled by default. This flag is a no-op.
  --separateProfileRun        [Deprecated] Separate profile run is now always enabled. This flag is a no-op.
"""  # the lines of samples/common/sampleOptions.cpp (NVIDIA/TensorRT main, 11.1) for these flags

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [ "${1:-}" = "--help" ]; then cat "$FAKE_HELP"; exit 0; fi
printf '%s\\n' "$@" >> "$FAKE_ARGS"
echo --- >> "$FAKE_ARGS"
for a in "$@"; do
  case "$a" in
    --exportLayerInfo=*) cp "$FAKE_LAYERS" "${a#--exportLayerInfo=}" ;;
    --exportTimes=*) echo '[{"computeMs": 1.5}, {"computeMs": 2.5}]' > "${a#--exportTimes=}" ;;
  esac
done
"""


def _root(out: Path, tmp: Path) -> Path:
    root = tmp / "out"
    shutil.copytree(out / "onnx", root / "onnx", ignore=shutil.ignore_patterns("weights.safetensors"))
    shutil.copy(out / "schedule.json", root / "schedule.json")
    return root


def _shape_string(io: dict, key: str) -> str:
    return ",".join(f"{i['name']}:{'x'.join(str(d) for d in i[key])}" for i in io["inputs"])


@pytest.mark.parametrize("fixture", FIXTURES)
def test_io_ranges_are_the_compiled_resolution(fixture: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(fixture)
    io = load_io(out / "onnx")
    s = load_schedule(out / "schedule.json")
    spec = get_spec(s.model)
    latent = tuple(family_of(spec).latent_shape(spec, load_quantized_model(out), tuple(s.resolution)))
    assert tuple(io["latent_shape"]) == latent
    assert io["dims"]["batch"]["min"] == 1 and io["dims"]["batch"]["max"] == 4
    if io["family"] == "flux":
        _, h, w = latent
        want = {"img_tokens": (h // 2) * (w // 2), "txt_tokens": spec.text_len}
    elif io["family"] == "wan":
        _, f, h, w = latent
        want = {"frames": f, "height": h, "width": w, "txt_tokens": spec.text_len}
    else:
        _, h, w = latent
        ceil32 = lambda n: -(-n // 32) * 32  # noqa: E731
        want = {
            "height": h, "width": w, "cap_tokens": spec.text_len,
            "img_tokens_padded": ceil32((h // 2) * (w // 2)), "cap_tokens_padded": ceil32(spec.text_len),
        }  # fmt: skip
        assert io["dims"]["batch"]["opt"] == (2 if spec.guidance_scale > 0 else 1)  # CFG batched in one call
    for sym, n in want.items():
        assert io["dims"][sym] == {"min": n, "opt": n, "max": n}, sym
    for inp in io["inputs"]:
        for key in ("min", "opt", "max"):
            shape = inp[f"{key}_shape"]
            assert len(shape) == len(inp["shape"])
            for d, v in zip(inp["shape"], shape):
                assert v == (d if isinstance(d, int) else io["dims"][d][key]), (inp["name"], d)
        assert inp["max_shape"][0] >= inp["opt_shape"][0] >= inp["min_shape"][0] >= 1 or not isinstance(
            inp["shape"][0], str
        )


@pytest.mark.parametrize("fixture", FIXTURES)
def test_scripts_shapes_equal_io_ranges(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out: Path = request.getfixturevalue(fixture)
    root = _root(out, tmp_path)
    io = load_io(root / "onnx")
    s = load_schedule(root / "schedule.json")
    ids = list(range(len(s.configs)))
    scripts = write_trtexec_scripts(root, ids, io, step_configs=s.step_configs)
    assert {p.name for p in scripts} == {
        *(f"build_config_{k:02d}.sh" for k in ids), *(f"profile_config_{k:02d}.sh" for k in ids), "profile_schedule.sh"
    }  # fmt: skip
    for k in ids:
        build = (root / "trtexec" / f"build_config_{k:02d}.sh").read_text()
        assert f"--onnx=onnx/config_{k:02d}.trt.onnx" in build
        for flag, key in (
            ("--minShapes", "min_shape"),
            ("--optShapes", "opt_shape"),
            ("--maxShapes", "max_shape"),
        ):
            assert f"{flag}={_shape_string(io, key)} " in build.replace("\\\n", " ")
        prof = (root / "trtexec" / f"profile_config_{k:02d}.sh").read_text()
        assert f"--shapes={_shape_string(io, 'opt_shape')} " in prof.replace("\\\n", " ")
        for w in io["weight_inputs"][:3]:
            assert w["name"] not in build  # static weight inputs take no shape flag
        assert f"{len(io['weight_inputs_per_config'][str(k)])} static-shape inputs" in build
    sched = (root / "trtexec" / "profile_schedule.sh").read_text()
    assert f"STEP_CONFIGS=({' '.join(map(str, s.step_configs))})" in sched
    for p in scripts:
        r = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{p.name}: {r.stderr}"


def _fake_env(tmp: Path, help_text: str, plugin_layers: int) -> dict[str, str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "trtexec"
    exe.write_text(FAKE_TRTEXEC)
    exe.chmod(0o755)
    (tmp / "help.txt").write_text(help_text)
    layers = [{"Name": f"layer{i}", "LayerType": "PluginV3"} for i in range(plugin_layers)]
    layers += [{"Name": "QLinear_named_matmul", "LayerType": "MatrixMultiply"}]  # a name is not a plugin
    (tmp / "layers.json").write_text(json.dumps({"Layers": layers, "Bindings": []}))
    plugin = tmp / PLUGIN_LIBRARY
    plugin.write_bytes(b"not a library")
    (tmp / "args.txt").unlink(missing_ok=True)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_HELP": str(tmp / "help.txt"),
        "FAKE_ARGS": str(tmp / "args.txt"),
        "FAKE_LAYERS": str(tmp / "layers.json"),
        "ADATSQ_TRT_PLUGIN": str(plugin),
    }


def _qlinear_count(path: Path) -> int:
    import onnx

    return sum(1 for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "QLinear")


@pytest.mark.parametrize("version", ["10", "11"])
def test_scripts_run_against_fake_trtexec(compiled_tiny_flux: Path, tmp_path: Path, version: str) -> None:
    """FAKE trtexec: 10.x gets --stronglyTyped/--useCudaGraph/--separateProfileRun, 11.x (no-ops) does not;
    both get --enablePluginOverride; the build fails when the engine has fewer plugin layers than QLinear
    nodes, whatever the layer names say."""
    root = _root(compiled_tiny_flux, tmp_path)
    io = load_io(root / "onnx")
    s = load_schedule(root / "schedule.json")
    write_trtexec_scripts(root, [0], io, step_configs=s.step_configs)
    (root / "trt").mkdir()
    n = _qlinear_count(config_graphs(compiled_tiny_flux)[0])
    help_text = HELP_10 if version == "10" else HELP_11
    env = _fake_env(tmp_path, help_text, plugin_layers=n)
    build = root / "trtexec" / "build_config_00.sh"
    r = subprocess.run(["bash", str(build)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert ("--stronglyTyped" in args) == (version == "10")
    assert "--enablePluginOverride" in args
    assert f"--staticPlugins={env['ADATSQ_TRT_PLUGIN']}" in args
    assert "--onnx=onnx/config_00.trt.onnx" in args
    prof = root / "trtexec" / "profile_config_00.sh"
    r = subprocess.run(["bash", str(prof)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args.txt").read_text().split("---")[-2].split("\n")
    assert ("--useCudaGraph" in args) == ("--separateProfileRun" in args) == (version == "10")
    # fewer plugin layers than QLinear nodes: the function body was built, the script fails
    env = _fake_env(tmp_path, help_text, plugin_layers=n - 1)
    r = subprocess.run(["bash", str(build)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 3 and "function body" in r.stderr
    # the schedule script: one run per step, the engine of the step's configuration, times summed
    (root / "trt" / "config_00.plan").write_bytes(b"plan")
    write_trtexec_scripts(root, [0], io, step_configs=[0, 0, 0])
    r = subprocess.run(["bash", str(root / "trtexec" / "profile_schedule.sh")], capture_output=True, text=True,
                       env=env, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("config_00") == 3 and "total 6.000 ms over 3 steps" in r.stdout
