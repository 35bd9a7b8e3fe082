"""Stage 1, load: the transformer (Hub, local checkpoint or tiny config) and the compile config record."""

from __future__ import annotations

from typing import Any

from adatsq.compiler.context import CompileContext
from adatsq.core.config import dump_json
from adatsq.core.errors import CompileError

__all__ = ["load_key", "run_load"]


def load_key(ctx: CompileContext) -> dict[str, Any]:
    return {"config": ctx.config.to_dict(), "fingerprint": ctx.fingerprint}


def run_load(ctx: CompileContext) -> None:
    inv = ctx.inventory  # raises LayerRuleError naming any linear the family's rules do not cover
    summary = (
        f"{len(inv.act_layers)} activation-quantized linears in {len(inv.units)} input groups, "
        f"{len(inv.weight_only)} weight-only, {len(inv.kept)} kept in full precision"
    )
    if not inv.act_layers:
        # nothing for the bit-width search to schedule: a compile would "succeed" with nothing quantized
        raise CompileError(
            f"{ctx.spec.name} ({type(ctx.model).__name__}): no linear is activation-quantized ({summary}); "
            f"the {ctx.spec.family} family's layer rules mark nothing Role.ACT, so there is nothing to compile"
        )
    ctx.log(f"[bold]{ctx.spec.name}[/] ({type(ctx.model).__name__}): {summary}")
    dump_json(ctx.out.root / "compile_config.json", ctx.config)
