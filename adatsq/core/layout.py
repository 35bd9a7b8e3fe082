"""The output directory's layout (DESIGN.md contract 3): every path the compiler writes and the runtime
reads, spelled once. ``config_NN`` names one distinct activation configuration (its ONNX graph, its engine,
its scripts and its Triton model)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["TRT_GRAPH_SUFFIX", "OutputLayout", "config_id_of", "config_tag"]

#: ``onnx/config_NN.trt.onnx``: the TensorRT twin of ``onnx/config_NN.onnx`` (export/trt_graph.py)
TRT_GRAPH_SUFFIX = ".trt.onnx"

_TAG = re.compile(r"config_(\d+)")


def config_tag(config_id: int) -> str:
    """``config_NN``: the stem shared by every per-configuration file."""
    return f"config_{config_id:02d}"


def config_id_of(path: str | Path) -> int | None:
    """The id in a ``config_NN.*`` file name (or ``build_config_NN.sh``), None for any other name."""
    m = _TAG.search(Path(path).name)
    return int(m.group(1)) if m else None


class OutputLayout:
    """Paths inside one output directory; creates nothing."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def meta(self) -> Path:
        return self.root / ".adatsq"

    @property
    def lock_file(self) -> Path:
        """The one-writer lock of a compile (adatsq/core/lock.py)."""
        return self.meta / "lock"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def schedule(self) -> Path:
        return self.root / "schedule.json"

    @property
    def weights(self) -> Path:
        return self.root / "weights.safetensors"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def transformer_config(self) -> Path:
        return self.root / "transformer_config.json"

    @property
    def onnx(self) -> Path:
        return self.root / "onnx"

    @property
    def io(self) -> Path:
        return self.onnx / "io.json"

    @property
    def trt(self) -> Path:
        return self.root / "trt"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def triton(self) -> Path:
        return self.root / "triton"

    @property
    def trtexec(self) -> Path:
        return self.root / "trtexec"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def onnx_graph(self, config_id: int) -> Path:
        return self.onnx / f"{config_tag(config_id)}.onnx"

    def plan(self, config_id: int) -> Path:
        return self.trt / f"{config_tag(config_id)}.plan"

    def onnx_graphs(self) -> list[tuple[int, Path]]:
        """``(config id, path)`` of every ``onnx/config_NN.onnx`` present, sorted by id (not the TensorRT
        twins ``config_NN.trt.onnx``: :meth:`trt_graph`)."""
        return [(k, p) for k, p in _present(self.onnx, ".onnx") if not p.name.endswith(TRT_GRAPH_SUFFIX)]

    def trt_graph(self, config_id: int) -> Path:
        """``onnx/config_NN.trt.onnx``: the TensorRT twin of ``config_NN.onnx`` (export/trt_graph.py)."""
        return self.onnx / f"{config_tag(config_id)}{TRT_GRAPH_SUFFIX}"

    def plans(self) -> list[tuple[int, Path]]:
        """``(config id, path)`` of every ``trt/config_NN.plan`` present, sorted by id."""
        return _present(self.trt, ".plan")


def _present(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    found = ((config_id_of(p), p) for p in folder.glob(f"config_*{suffix}"))
    return sorted((k, p) for k, p in found if k is not None)
