"""Stage 5, export: one ONNX graph per distinct configuration (the work is export/onnx_export.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adatsq.compiler.context import CompileContext
from adatsq.export.onnx_export import export_files, export_inputs, export_onnx

__all__ = ["export_key", "export_outputs", "run_export"]


def export_key(ctx: CompileContext) -> dict[str, Any]:
    return export_inputs(ctx.out, ctx.schedule, ctx.out.stage_key("quantize"))


def export_outputs(ctx: CompileContext) -> list[Path]:
    return export_files(ctx.out, ctx.schedule)


def run_export(ctx: CompileContext) -> None:
    export_onnx(ctx.out, ctx.schedule, ctx.log)
