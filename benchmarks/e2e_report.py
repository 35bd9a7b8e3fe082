"""The report of benchmarks/bench_e2e.py: issue 13's goals as ratios from one run, and the markdown table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e2e_measure import CATEGORIES

GOALS = {
    "step_ms": 95.0,
    "vs_bf16_compile": 1.35,
    "vs_fp8_compile": 1.0,
    "switch_frac": 0.01,
    "weights_gb": 4.6,
}


def goals(results: dict[str, Any], model: str) -> list[tuple[str, str, str]]:
    """(goal, value, verdict) rows of issue 13, from ``model``'s results (n/a where a number is missing)."""

    def ms(v: str) -> float | None:
        r = results.get(f"{model}/{v}", {})
        return r.get("ms") if r.get("status") == "ok" else None

    ours, bf, f8 = ms("ours-w3a3.1"), ms("bf16-compile"), ms("fp8-compile")
    r = results.get(f"{model}/ours-w3a3.1", {})
    sw = (r.get("switch") or {}).get("switch_ms")
    wgb = r.get("weights_gb") if r.get("status") == "ok" else None

    def row(goal: str, value: float | None, ok: Callable[[float], bool], fmt: str) -> tuple[str, str, str]:
        if value is None:
            return goal, "n/a", "n/a"
        return goal, fmt.format(value), "PASS" if ok(value) else "FAIL"

    return [
        row(f"W3A3.1 step ≤ {GOALS['step_ms']:.0f} ms", ours, lambda v: v <= GOALS["step_ms"], "{:.2f} ms"),
        row(
            "bf16-compile / W3A3.1 ≥ 1.35×",
            bf / ours if bf and ours else None,
            lambda v: v >= 1.35,
            "{:.3f}×",
        ),
        row(
            "fp8-compile / W3A3.1 ≥ 1.00×", f8 / ours if f8 and ours else None, lambda v: v >= 1.0, "{:.3f}×"
        ),
        row(
            "switch cost < 1 % of a step",
            sw / ours if sw is not None and ours else None,
            lambda v: v < 0.01,
            "{:.3%}",
        ),
        row("resident weights ≤ 4.6 GB", wgb, lambda v: v <= GOALS["weights_gb"], "{:.3f} GB"),
    ]


def to_markdown(data: dict[str, Any], models: list[str], variants: list[str]) -> str:
    res = data["results"]
    cats = [c for c, _ in CATEGORIES]
    head = ["model", "variant", "step ms", "eager ms", "vs bf16-compile", "vs fp8-compile", "switch ms",
            "resident GiB", "peak GiB", "weights GB", *cats, "status"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v: Any, fmt: str = "{:.2f}") -> str:
        return "–" if v is None else fmt.format(v)

    for m in models:
        base = {k: res.get(f"{m}/{k}", {}).get("ms") for k in ("bf16-compile", "fp8-compile")}
        for v in variants:
            r = res.get(f"{m}/{v}")
            if r is None:
                continue
            ms = r.get("ms")
            kern = (r.get("kernels") or {}).get("ms_per_step", {})
            status = (
                r["status"]
                if r["status"] == "ok"
                else (
                    f"skipped: {r['reason']}"
                    if r["status"] == "skipped"
                    else f"error: {r.get('error', '')[:80]}"
                )
            )
            ratio = [
                f(base[k] / ms, "{:.2f}×") if (ms and base[k]) else "–"
                for k in ("bf16-compile", "fp8-compile")
            ]
            lines.append("| " + " | ".join([
                m, v, f(ms), f(r.get("eager_ms")), *ratio, f((r.get("switch") or {}).get("switch_ms"), "{:.3f}"),
                f(r.get("resident_gib")), f(r.get("peak_gib")), f(r.get("weights_gb"), "{:.3f}"),
                *[f(kern.get(c)) if kern else "–" for c in cats], status,
            ]) + " |")  # fmt: skip
    out = ["\n".join(lines), ""]
    for m in models:
        out += [f"Goals (issue 13) from {m}:", "", "| goal | value | verdict |", "|---|---|---|"]
        out += [f"| {g} | {v} | {k} |" for g, v, k in goals(res, m)]
        out.append("")
    return "\n".join(out)
