"""The one way a test creates an ONNX Runtime session.

``ADATSQ_ORT_THREADS`` (an integer; unset or empty: ONNX Runtime's default) sets ``intra_op_num_threads``
here exactly as the runner's ORT backend does (runtime/runner.py), so a suite run with, e.g.,
``OMP_NUM_THREADS=1 ADATSQ_ORT_THREADS=1`` runs every torch op and every ORT session, the runner's and the
tests' own, on one thread. Different thread counts change float summation order, hence which activation
codes sit on which side of a rounding tie: the tests must hold for every setting (see :mod:`helpers.ties`).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnxruntime as ort

ORT_THREADS_ENV = "ADATSQ_ORT_THREADS"


def ort_threads() -> int | None:
    """The intra-op thread count asked for by ``ADATSQ_ORT_THREADS``, or None for ORT's default."""
    value = os.environ.get(ORT_THREADS_ENV, "").strip()
    return int(value) if value else None


def session_options() -> ort.SessionOptions:
    """Session options as the runner builds them (quiet log, ``ADATSQ_ORT_THREADS`` honoured)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = ort_threads()
    if threads is not None:
        opts.intra_op_num_threads = threads
    return opts


def ort_session(model: str | Path | bytes | onnx.ModelProto) -> ort.InferenceSession:
    """A CPU session of ``model`` (a path, serialized bytes or a ModelProto without external data)."""
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
