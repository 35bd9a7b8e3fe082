"""The static TensorRT-parser check of the FULL-SIZE graphs: flux-dev's architecture exported on the CPU.

    python3 benchmarks/check_trt_full.py [--model flux-dev] [--blocks N] [--out DIR] [--json PATH]

Builds the random-weight store of ``benchmarks/bench_export_full.py`` (published architecture, parameters on
the meta device, random W3 codes; bf16 kept layers as a GPU quantize stage writes them), runs the export stage
in a child process (``export_onnx``: config graphs, their TensorRT twins ``config_NN.trt.onnx``, each twin
checked by export/trt_check.py, which fails the export on any violation), then checks every twin again here
and prints one JSON record: sizes, weight-input counts and dtypes, node counts, violations, times. Too slow
for the test suite at full size (the export alone is ~80 s and a 4.7 GB weight file, BENCHMARKS.md);
``--blocks 1`` keeps every width of the model and takes a fraction of that.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export_full import build  # noqa: E402


def check(out: Path) -> dict:
    from adatsq.export.trt_check import check_file

    io = json.loads((out / "onnx" / "io.json").read_text())
    twins = sorted((out / "onnx").glob("config_*.trt.onnx"))
    t0 = time.perf_counter()
    reports = [check_file(p) for p in twins]
    return {
        "twins": {p.name: p.stat().st_size for p in twins},
        "nodes": {r.graph: r.nodes for r in reports},
        "violations": {r.graph: [str(v) for v in r.violations] for r in reports},
        "check_s": round(time.perf_counter() - t0, 2),
        "weight_inputs": len(io["weight_inputs"]),
        "weight_input_dtypes": dict(collections.Counter(w["dtype"] for w in io["weight_inputs"])),
        "data_input_profiles": {
            i["name"]: [i["min_shape"], i["opt_shape"], i["max_shape"]] for i in io["inputs"]
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="flux-dev")
    ap.add_argument("--blocks", type=int, default=None, help="num_layers = num_single_layers = N")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the record here")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="check_trt_full_") if a.out is None else None
    out = Path(tmp.name) if tmp is not None else a.out
    t0 = time.perf_counter()
    record: dict = {"model": a.model, "blocks": a.blocks}
    record.update(build(out, a.model, a.blocks, 3, 0, torch.bfloat16))
    bench = Path(__file__).resolve().parent / "bench_export_full.py"
    cmd = [sys.executable, str(bench), "--stage", "export", "--model", a.model, "--out", str(out)]
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    record.update(json.loads(res.stdout.strip().splitlines()[-1]))
    record.update(check(out))
    record["ok"] = not any(record["violations"].values())
    record["total_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(record, indent=1)
    print(text)
    if a.json is not None:
        a.json.write_text(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    sys.exit(0 if record["ok"] else 1)


if __name__ == "__main__":
    main()
