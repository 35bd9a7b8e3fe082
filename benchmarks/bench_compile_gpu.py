"""Wall time and peak GPU memory per stage of ``adatsq-compile MODEL --random-weights`` on the GPU, the
sizes of what it wrote, and a few steps of the runner's torch backend on the result.

    python benchmarks/bench_compile_gpu.py --out $OUT/run [--run-steps] -- flux-dev --target 3.1 --steps 4 ...

Runs the real CLI in-process (so ``torch.cuda.max_memory_allocated`` sees the compile; the peak is reset
before each stage) and writes ``<out>.json``: per stage the wall time and the peak allocated/reserved GPU
memory, the file sizes (weights.safetensors, every onnx/config_NN.onnx), and with ``--run-steps`` the
runner's torch backend generating one sample through the schedule (configurations switching per step).
Arguments after ``--`` go to adatsq-compile (no ``-o``; ``--random-weights`` is added); an ``--until``
there stops the compile early. The run resumes from a compile already in ``--out`` (finished stages are
cached), so a compile longer than one command can be split across commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch


def _sizes(root: Path) -> dict[str, int]:
    names = [
        "weights.safetensors",
        *(f"onnx/{p.name}" for p in sorted((root / "onnx").glob("config_*.onnx"))),
    ]
    return {n: (root / n).stat().st_size for n in names if (root / n).exists()}


def _wrap(stage: Any, stages: dict[str, dict[str, float]]) -> Any:
    def run(ctx: Any) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        stage.run(ctx)
        torch.cuda.synchronize()
        stages[stage.name] = {
            "wall_s": time.perf_counter() - start,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        }
        print(json.dumps({"stage": stage.name, **stages[stage.name]}), flush=True)

    return dataclasses.replace(stage, run=run)


def _run_steps(root: Path) -> dict[str, Any]:
    from adatsq.runtime.runner import EngineRunner

    runner = EngineRunner(root, backend="torch", device="cuda")
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    final = runner.generate(seed=0, n=1)
    torch.cuda.synchronize()
    return {
        "wall_s": time.perf_counter() - start,
        "steps": [dataclasses.asdict(s) for s in runner.steps],
        "configs_used": sorted(set(runner.used_configs)),
        "final_finite": bool(torch.isfinite(final).all()),
        "final_shape": list(final.shape),
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", required=True, help="output directory of the compile; <out>.json gets the numbers"
    )
    ap.add_argument("--run-steps", action="store_true", help="then generate with the runner's torch backend")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then adatsq-compile's arguments (no -o)")
    a = ap.parse_args()
    args = [x for x in a.args if x != "--"]
    from adatsq.compiler import pipeline
    from adatsq.compiler.cli import main as compile_main

    stages: dict[str, dict[str, float]] = {}
    pipeline.STAGES = tuple(_wrap(s, stages) for s in pipeline.STAGES)
    start = time.perf_counter()
    compile_main.main([*args, "-o", a.out, "--random-weights"], standalone_mode=False)
    record: dict[str, Any] = {
        "args": args,
        "wall_s": time.perf_counter() - start,
        "stages": stages,
        "sizes_bytes": _sizes(Path(a.out)),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if a.run_steps:
        record["runner_torch"] = _run_steps(Path(a.out))
    Path(a.out + ".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
