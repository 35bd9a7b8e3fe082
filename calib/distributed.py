"""Data parallelism over calibration samples with ``torch.distributed`` (DESIGN.md, Scale).

Launched as ``torchrun --nproc-per-node N adatsq-compile ...``: every process runs the same command on the
same output directory; :func:`init_from_env` joins them into one process group (NCCL on CUDA, each process on
the GPU ``LOCAL_RANK``; gloo on the CPU). Rank r works on the samples ``n ≡ r (mod world)``
(:func:`shard`) and the accumulators are summed over ranks (:func:`all_reduce_sum_`).

Every helper works unchanged in a single process (no launcher, or ``WORLD_SIZE=1``): ``rank() == 0``,
``world_size() == 1``, :func:`shard` returns every index, and the collectives are no-ops, so callers need no
``if distributed`` branches.

Collectives take CPU or CUDA tensors whatever the backend: under NCCL a CPU tensor is staged through the
process's GPU, under gloo a CUDA tensor through the host; the result lands in the tensor passed in.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_max_",
    "all_reduce_sum_",
    "barrier",
    "broadcast_",
    "broadcast_object",
    "destroy",
    "init_from_env",
    "is_initialized",
    "is_main",
    "owner",
    "rank",
    "shard",
    "world_size",
]

#: How long a collective waits for the slowest rank (``ADATSQ_DIST_TIMEOUT`` seconds overrides it). Generous:
#: on a resumed calibration one rank may find all its samples cached and wait at the gather for another's
#: whole shard, and torchrun ends every worker when one fails, so a long timeout never hides a crash.
DEFAULT_TIMEOUT_S = 12 * 3600


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that holds the output directory's lock and writes its files."""
    return rank() == 0


def owner(index: int) -> int:
    """The rank that computes sample ``index`` (the inverse of :func:`shard`)."""
    return index % world_size()


def shard(n: int) -> list[int]:
    """The sample indices of this rank among ``range(n)``: ``n ≡ rank (mod world)``, in increasing order.
    The shards of all ranks partition ``range(n)``; their sizes differ by at most one."""
    return list(range(rank(), n, world_size()))


def init_from_env(device: torch.device | str | None = None) -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) when ``WORLD_SIZE`` > 1. Backend NCCL if ``device`` is CUDA (then the
    current CUDA device becomes ``LOCAL_RANK``), gloo otherwise. ``device=None``: CUDA when available.

    Returns True if this call created the group (the caller then :func:`destroy` s it), False when there is
    nothing to join or the group exists already."""
    if is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    backend = "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    timeout = datetime.timedelta(seconds=float(os.environ.get("ADATSQ_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def destroy(succeeded: bool = True) -> None:
    """Leave the process group. After success every rank meets at a barrier first, so no rank tears its
    connections down while a peer is still inside a collective (gloo aborts the peer's process then, with
    ``terminate called without an active exception``). After a failure nothing collective is attempted: the
    peers may be blocked in a collective this rank never reaches, a barrier would hang, and a teardown would
    abort this process before its traceback is printed; the launcher ends the others."""
    if not is_initialized():
        return
    if succeeded:
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def _staged(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` where the backend can take it: on the current GPU under NCCL, on the host otherwise."""
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
        return tensor if tensor.device == device else tensor.to(device)
    return tensor if tensor.device.type == "cpu" else tensor.cpu()


def _collective(tensor: torch.Tensor, op: Any) -> torch.Tensor:
    buf = _staged(tensor)
    if buf is tensor and tensor.is_contiguous():
        op(tensor)
        return tensor
    buf = buf.contiguous()
    op(buf)
    tensor.copy_(buf)
    return tensor


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (and return it); a no-op in a single process."""
    if not is_initialized():
        return tensor
    return _collective(tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM))


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of ``tensor`` over all ranks, in place (and return it); a no-op in one process."""
    if not is_initialized():
        return tensor
    return _collective(tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.MAX))


def broadcast_(tensor: torch.Tensor, src: int) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s, in place (shapes and dtypes must agree)."""
    if not is_initialized():
        return tensor
    return _collective(tensor, lambda t: dist.broadcast(t, src=src))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself in a single process."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
