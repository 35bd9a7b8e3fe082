"""The end-of-compile summary table (rich)."""

from __future__ import annotations

from rich.table import Table

from adatsq.compiler.context import CompileContext

__all__ = ["summary_table"]


def summary_table(ctx: CompileContext, status: dict[str, str]) -> Table:
    s = ctx.schedule
    table = Table(title=f"adatsq: {s.model} → {ctx.out.root}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    fr = s.bit_fractions()
    table.add_row("target / achieved bits", f"{s.target_bits:g} / {s.achieved_bits:.3f}")
    table.add_row("activation bits used", ", ".join(f"A{b}: {100 * f:.1f}%" for b, f in fr.items()))
    table.add_row("weight bits", ", ".join(sorted({f"W{b}" for b in s.weight_bits.values()})))
    table.add_row("distinct configurations (engines)", str(len(s.configs)))
    table.add_row("config id per step", " ".join(str(c) for c in s.step_configs))
    table.add_row("steps / timesteps", f"{s.steps}: " + ", ".join(f"{t:.0f}" for t in s.sampler.timesteps))
    table.add_row("Pareto paths kept", str(len(s.pareto)))
    table.add_row(
        "stages",
        ", ".join(
            f"{k} ({v}{f', {ctx.timings[k]:.1f}s' if k in ctx.timings else ''})" for k, v in status.items()
        ),
    )
    return table
