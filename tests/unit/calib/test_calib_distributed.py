"""Data-parallel calibration (adatsq.calib.distributed): the helpers in one process and in two gloo processes
on the CPU, and a two-rank calibration equal to the one-process one."""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers.calibration import tiny_inputs

from adatsq.calib import distributed

STEPS = 2
SAMPLES = 3  # odd: the shards of two ranks differ in size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_single_process_helpers_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env("cpu") is False and not distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env("cpu") is False
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard(5) == [0, 1, 2, 3, 4] and distributed.owner(3) == 0
    t = torch.arange(4.0)
    assert distributed.all_reduce_sum_(t) is t and torch.equal(t, torch.arange(4.0))
    assert distributed.broadcast_(t, 0) is t and distributed.broadcast_object({"a": 1}) == {"a": 1}
    distributed.barrier()


def _tiny_flux():
    return tiny_inputs(SAMPLES)


def _calibrate(tiny, checkpoints=None, on_sample=None):
    from adatsq.calib.calibrate import calibrate

    spec, fam, model, cond, noise = tiny
    inv = fam.inventory(model)
    return calibrate(fam, spec, model, inv, cond, noise, STEPS, {}, None, checkpoints, on_sample)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from adatsq.calib.calibrate import SampleCheckpoints

    torch.set_num_threads(1)
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
        }
    )
    assert distributed.init_from_env("cpu") is True
    succeeded = False
    try:
        assert torch.distributed.get_backend() == "gloo"
        assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (
            rank,
            world,
            rank == 0,
        )
        assert distributed.shard(SAMPLES) == list(range(rank, SAMPLES, world))
        # all-reduce in place, also of a non-contiguous view, and of float64
        t = torch.full((2, 3), float(rank + 1))
        assert distributed.all_reduce_sum_(t) is t and torch.equal(t, torch.full((2, 3), 3.0))
        m = torch.zeros(3, 2, dtype=torch.float64)
        view = m.t()
        view += rank + 1
        distributed.all_reduce_sum_(view)
        assert torch.equal(m, torch.full((3, 2), 3.0, dtype=torch.float64))
        b = torch.full((4,), float(rank))
        distributed.broadcast_(b, 1)
        assert torch.equal(b, torch.ones(4))
        assert distributed.broadcast_object(f"rank {rank}") == "rank 0"

        tiny = _tiny_flux()
        store = SampleCheckpoints(Path(out) / "samples", "key")
        seen: list[tuple[int, bool]] = []
        data = _calibrate(tiny, store, lambda n, loaded: seen.append((n, loaded)))
        assert seen == [(n, False) for n in distributed.shard(SAMPLES)]  # its own samples only
        seen.clear()
        again = _calibrate(tiny, store, lambda n, loaded: seen.append((n, loaded)))
        assert seen == [(n, True) for n in distributed.shard(SAMPLES)]  # resumed from its checkpoints
        assert torch.equal(again.latents, data.latents) and torch.equal(again.fisher, data.fisher)
        torch.save(data.state_dict(), Path(out) / f"rank{rank}.pt")  # every rank has the whole result
        succeeded = True
    except BaseException:
        # a rank that fails may not get to print: its peers are still in a collective, and the process can
        # be aborted on its way out. The test reports this file.
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        distributed.destroy(succeeded)


def test_two_gloo_ranks_calibrate_like_one_process(tmp_path: Path) -> None:
    try:
        mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    except Exception as exc:
        errors = "\n".join(p.read_text() for p in sorted(tmp_path.glob("rank*.error")))
        raise AssertionError(
            f"a rank failed: {exc}\n{errors or 'no rank raised (it died in torch)'}"
        ) from exc
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count the ranks ran with
    try:
        ref = _calibrate(_tiny_flux()).state_dict()
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        f"sample_{n:03d}.pt" for n in range(3)
    ]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["layers"] == ref["layers"]
        for name in ("timesteps", "latents", "outputs", "noise", "final", "fisher"):
            assert got[name].shape == ref[name].shape and got[name].dtype == ref[name].dtype, name
            assert torch.allclose(got[name], ref[name], rtol=1e-5, atol=1e-7), name
        assert all(torch.equal(got["cond"][k], ref["cond"][k]) for k in ref["cond"])
