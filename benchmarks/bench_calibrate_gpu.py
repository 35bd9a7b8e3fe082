"""Wall time and peak GPU memory of ``adatsq-compile MODEL --random-weights --until calibrate`` on the GPU.

    python benchmarks/bench_calibrate_gpu.py --out $OUT/run -- flux-dev --target 3.1 --steps 4 ...

Runs the real CLI in-process (so ``torch.cuda.max_memory_allocated`` sees the compile) and writes
``<out>.json`` with the wall time per stage, the peak allocated/reserved GPU memory and the arguments.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", required=True, help="output directory of the compile; <out>.json gets the numbers"
    )
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then adatsq-compile's arguments (no -o)")
    a = ap.parse_args()
    args = [x for x in a.args if x != "--"]
    from adatsq.compiler.cli import main as compile_main

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    compile_main.main([*args, "-o", a.out, "--random-weights", "--until", "calibrate"], standalone_mode=False)
    wall = time.perf_counter() - start
    record = {
        "args": args,
        "wall_s": wall,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(a.out + ".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
