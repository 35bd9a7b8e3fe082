"""Stage 1, load: the transformer (Hub, local checkpoint or tiny config) and the compile config record."""

from __future__ import annotations

from typing import Any

from adatsq.compiler.context import CompileContext
from adatsq.core.config import dump_json

__all__ = ["load_key", "run_load"]


def load_key(ctx: CompileContext) -> dict[str, Any]:
    return {"config": ctx.config.to_dict(), "fingerprint": ctx.fingerprint}


def run_load(ctx: CompileContext) -> None:
    inv = ctx.inventory
    ctx.log(
        f"[bold]{ctx.spec.name}[/] ({type(ctx.model).__name__}): {len(inv.act_layers)} activation-quantized linears "
        f"in {len(inv.units)} input groups, {len(inv.weight_only)} weight-only, {len(inv.skipped)} kept in full precision"
    )
    dump_json(ctx.out.root / "compile_config.json", ctx.config)
