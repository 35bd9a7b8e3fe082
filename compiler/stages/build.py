"""Stage 6, build: one TensorRT engine per ONNX graph, or the skip record (the work is export/trt_build.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adatsq.compiler.context import CompileContext
from adatsq.export.trt_build import build_engines, build_files, build_inputs

__all__ = ["build_key", "build_outputs", "run_build"]


def build_key(ctx: CompileContext) -> dict[str, Any]:
    return build_inputs(ctx.out)


def build_outputs(ctx: CompileContext) -> list[Path]:
    return build_files(ctx.out)


def run_build(ctx: CompileContext) -> None:
    command = f"adatsq-compile {ctx.spec.name} --target {ctx.config.target}"
    build_engines(ctx.out, ctx.schedule, command, ctx.log, ctx.progress)
