"""``torchrun --nproc-per-node 2 adatsq-compile ... --until calibrate`` on the CPU (gloo): one output directory,
written by rank 0, holding the calibration one process computes (within float summation order)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from adatsq.compiler.cli import main

ARGS = ["--target", "3.1", "--until", "calibrate", "--steps", "2", "--calib-samples", "3", "--device", "cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_ranks_write_the_single_process_calibration(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    # ``-m adatsq.compiler.cli`` is the adatsq-compile console script (here possibly a shell shim)
    cmd = [*launch, "-m", "adatsq.compiler.cli", "tiny-flux", "-o", str(out), *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    assert log.count("calibrate (trajectories + Fisher)") == 1  # only rank 0 reports
    assert log.count("activation-quantized linears") == 1
    stages = json.loads((out / ".adatsq" / "stages.json").read_text())
    assert set(stages) == {"load", "calibrate"}
    assert sorted(p.name for p in (out / "cache").iterdir()) == ["calibration.pt"]  # checkpoints removed

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks ran
    try:
        ref_dir = tmp_path / "one"
        result = CliRunner().invoke(main, ["tiny-flux", "-o", str(ref_dir), *ARGS])
        assert result.exit_code == 0, result.output
        # the same key whatever the number of ranks: a one-process rerun in the torchrun directory is cached
        before = (out / "cache" / "calibration.pt").stat().st_mtime_ns
        result = CliRunner().invoke(main, ["tiny-flux", "-o", str(out), *ARGS])
        assert result.exit_code == 0, result.output
        assert (out / "cache" / "calibration.pt").stat().st_mtime_ns == before
    finally:
        torch.set_num_threads(threads)

    got = torch.load(out / "cache" / "calibration.pt", weights_only=False)
    ref = torch.load(ref_dir / "cache" / "calibration.pt", weights_only=False)
    assert got.keys() == ref.keys()
    assert got["layers"] == ref["layers"] and got["provenance"] == ref["provenance"]
    for name in ("timesteps", "latents", "outputs", "noise", "final", "fisher"):
        assert got[name].shape == ref[name].shape and got[name].dtype == ref[name].dtype, name
        assert torch.allclose(got[name], ref[name], rtol=1e-5, atol=1e-7), name
    assert all(torch.equal(got["cond"][k], ref["cond"][k]) for k in ref["cond"])


def test_torchrun_two_ranks_sum_the_hessians_of_their_shards(tmp_path: Path) -> None:
    """Quantize is collective: each rank replays its shard of the samples and the Hessians are summed.
    ``gptq_errors.json``'s ``rtn`` entry is trace(ΔW·H·ΔWᵀ) with ΔW the round-to-nearest error, which does not
    depend on H, so it compares the summed Hessians with one process's (within summation order) directly;
    GPTQ's own error only has to be close (a code can flip where H's last bits differ)."""
    args = [a if a != "calibrate" else "quantize" for a in ARGS]
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    cmd = [*launch, "-m", "adatsq.compiler.cli", "tiny-flux", "-o", str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(json.loads((out / ".adatsq" / "stages.json").read_text())) == {
        "load",
        "calibrate",
        "search",
        "quantize",
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref_dir = tmp_path / "one"
        result = CliRunner().invoke(main, ["tiny-flux", "-o", str(ref_dir), *args])
        assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)
    got = json.loads((out / "cache" / "gptq_errors.json").read_text())
    ref = json.loads((ref_dir / "cache" / "gptq_errors.json").read_text())
    assert got.keys() == ref.keys() and len(ref) > 10
    for name in ref:
        assert abs(got[name]["rtn"] - ref[name]["rtn"]) <= 1e-5 * ref[name]["rtn"], name
        assert abs(got[name]["gptq"] - ref[name]["gptq"]) <= 0.05 * ref[name]["gptq"] + 1e-12, name
