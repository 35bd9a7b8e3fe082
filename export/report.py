"""The compile report (``<out>/report/``): pictures and one markdown page tying them together.

* ``fisher_heatmap.png``    Fisher information I[t, l] (steps × quantized layers), log colour scale
* ``bit_schedule.png``      chosen activation bits (steps × activation-quantized layers), config id per step
* ``pareto_frontier.png``   average bits vs cumulative loss of every surviving path, selection and target
* ``step_error.png``        per-step relative MSE of the quantized model (stored GPTQ weights) vs full precision
* ``gptq_errors.png``       per-layer RTN vs GPTQ weighted reconstruction error (when cache/gptq_errors.json exists)
* ``step_error.json``       the per-step numbers
* ``report.md``             achieved bits, bit fractions, engines, weight bytes, per-step config ids, the figures

Rendering uses matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adatsq.core.atomic import atomic_write, atomic_write_text
from adatsq.core.contract import ACT_BITS
from adatsq.core.layout import OutputLayout
from adatsq.core.schedule import Schedule

__all__ = ["REPORT_FIGURES", "weight_bytes", "write_report"]

REPORT_FIGURES = (
    "fisher_heatmap.png",
    "bit_schedule.png",
    "pareto_frontier.png",
    "step_error.png",
)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    _plt().close(fig)


def _short(name: str, width: int = 28) -> str:
    n = name.replace("single_transformer_blocks.", "stb.").replace("transformer_blocks.", "tb.")
    return n if len(n) <= width else "…" + n[-(width - 1) :]


def _layer_ticks(ax: Any, names: Sequence[str], axis: str = "x") -> None:
    """At most ~60 labelled ticks; with more layers every k-th is labelled (the colour axis is still full)."""
    n = len(names)
    step = max(1, int(np.ceil(n / 60)))
    idx = list(range(0, n, step))
    labels = [_short(names[i]) for i in idx]
    size = 7 if n <= 40 else 6
    if axis == "x":
        ax.set_xticks(idx)
        ax.set_xticklabels(labels, rotation=90, fontsize=size)
    else:
        ax.set_yticks(idx)
        ax.set_yticklabels(labels, fontsize=size)


def _fig_width(n_layers: int) -> float:
    return float(min(40.0, max(8.0, 0.22 * n_layers + 3)))


def plot_fisher(fisher: np.ndarray, layers: Sequence[str], timesteps: Sequence[float], path: Path) -> None:
    from matplotlib.colors import LogNorm

    plt = _plt()
    f = np.asarray(fisher, dtype=np.float64)
    positive = f[f > 0]
    floor = positive.min() if positive.size else 1e-12
    fig, ax = plt.subplots(figsize=(_fig_width(len(layers)), 2.5 + 0.3 * f.shape[0]))
    im = ax.imshow(
        np.maximum(f, floor),
        aspect="auto",
        norm=LogNorm(vmin=floor, vmax=max(f.max(), floor * 10)),
        cmap="viridis",
        interpolation="nearest",
    )
    ax.set_title("Fisher information I[t, l] per denoising step and quantized layer (log scale)")
    ax.set_xlabel("quantized layer")
    ax.set_ylabel("step (timestep)")
    _layer_ticks(ax, layers, "x")
    ax.set_yticks(range(f.shape[0]))
    ax.set_yticklabels([f"{i} (t={t:.0f})" for i, t in enumerate(timesteps)], fontsize=7)
    fig.colorbar(im, ax=ax, label="Fisher information (log)", fraction=0.03, pad=0.01)
    _save(fig, path)


def plot_schedule(s: Schedule, path: Path) -> None:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    plt = _plt()
    bits = np.array([s.configs[c] for c in s.step_configs], dtype=np.float64)
    levels = list(ACT_BITS)  # one colour each, below
    cmap = ListedColormap(["#d7301f", "#fc8d59", "#91bfdb", "#4575b4"])
    norm = BoundaryNorm([2.5, 3.5, 6, 12, 20], cmap.N)
    fig, ax = plt.subplots(figsize=(_fig_width(len(s.act_layers)), 2.5 + 0.3 * s.steps))
    im = ax.imshow(bits, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(
        f"Activation bit schedule: {s.steps} steps × {len(s.act_layers)} layers, "
        f"average {s.achieved_bits:.3f} bits (target {s.target_bits}), {len(s.configs)} engine config(s)"
    )
    ax.set_xlabel("activation-quantized layer")
    ax.set_ylabel("step (config id)")
    _layer_ticks(ax, s.act_layers, "x")
    ax.set_yticks(range(s.steps))
    ax.set_yticklabels([f"{i} (cfg {c})" for i, c in enumerate(s.step_configs)], fontsize=7)
    cb = fig.colorbar(im, ax=ax, ticks=levels, fraction=0.03, pad=0.01)
    cb.set_label("activation bits")
    _save(fig, path)


def plot_pareto(s: Schedule, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    xs = [p.average_bits for p in s.pareto]
    ys = [p.cumulative_loss for p in s.pareto]
    order = np.argsort(xs)
    ax.plot(np.array(xs)[order], np.array(ys)[order], "-", color="0.6", lw=1, zorder=1)
    ax.scatter(xs, ys, c="tab:blue", s=30, label="surviving Pareto paths", zorder=2)
    sel = [p for p in s.pareto if p.selected]
    if sel:
        ax.scatter(
            [p.average_bits for p in sel],
            [p.cumulative_loss for p in sel],
            marker="*",
            s=250,
            c="tab:red",
            edgecolors="k",
            label="selected path",
            zorder=3,
        )
    ax.axvline(s.target_bits, color="tab:green", ls="--", label=f"target {s.target_bits} bits")
    ax.set_xlabel("average activation bits of the path (unit-size weighted)")
    ax.set_ylabel("cumulative per-step loss (sum of step MSEs)")
    if ys and min(ys) > 0 and max(ys) / min(ys) > 30:
        ax.set_yscale("log")
    ax.set_title("Pareto frontier of the beam search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_step_error(rows: Sequence[dict[str, float]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.5, 0.35 * len(rows) + 3), 4.5))
    steps = [r["step"] for r in rows]
    err = [r["relative_mse"] for r in rows]
    cfgs = [int(r["config"]) for r in rows]
    colors = plt.get_cmap("tab10")
    bars = ax.bar(steps, err, color=[colors(c % 10) for c in cfgs])
    for b, r in zip(bars, rows):
        ax.annotate(
            f"{r['avg_bits']:.2f}b",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    from matplotlib.patches import Patch

    handles = [Patch(color=colors(c % 10), label=f"config {c}") for c in sorted(set(cfgs))]
    ax.set_xlabel("denoising step")
    ax.set_ylabel("relative MSE of velocity vs full precision")
    ax.set_title("Per-step error of the quantized model (GPTQ weights, scheduled activation bits)")
    ax.set_xticks(steps)
    if err and min(err) > 0 and max(err) / min(err) > 30:
        ax.set_yscale("log")
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_gptq_errors(errors: dict[str, dict[str, float]], path: Path) -> None:
    plt = _plt()
    names = list(errors)
    rtn = np.array([errors[n]["rtn"] for n in names])
    gptq = np.array([errors[n]["gptq"] for n in names])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(_fig_width(len(names)), 5))
    ax.bar(x - 0.2, rtn, width=0.4, label="round-to-nearest", color="tab:orange")
    ax.bar(x + 0.2, gptq, width=0.4, label="Fisher-weighted GPTQ", color="tab:blue")
    ax.set_yscale("log")
    _layer_ticks(ax, names, "x")
    ax.set_ylabel("Hessian-weighted reconstruction error (log)")
    ax.set_title(
        f"Weight quantization error per layer: GPTQ below RTN in {int((gptq < rtn).sum())}/{len(names)} layers"
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def weight_bytes(path: Path) -> dict[str, int]:
    """Bytes of the weight store: total file, packed quantized weights + scales, and what the same
    parameters take in bf16 (quantized layers at 2 bytes per weight, everything else as stored)."""
    from safetensors import safe_open

    from adatsq.passes.quant_linear import QUANT_TENSOR

    total = path.stat().st_size
    packed = 0
    bf16 = 0
    with safe_open(str(path), framework="pt") as f:
        layers = json.loads((f.metadata() or {}).get("adatsq.layers", "{}"))
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            t = f.get_slice(key)
            shape = t.get_shape()
            n = int(np.prod(shape)) if shape else 1
            nbytes = n * {"F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I8": 1, "I32": 4, "I64": 8, "F64": 8}.get(
                t.get_dtype(), 4
            )
            if QUANT_TENSOR.fullmatch(key):  # every rotation block's codes and scales
                packed += nbytes
            else:
                bf16 += n * 2
        for rec in layers.values():
            bf16 += 2 * rec["in_features"] * rec["out_features"]
    return {"file_bytes": total, "packed_weight_bytes": packed, "bf16_equivalent_bytes": bf16}


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def write_report(
    out: OutputLayout,
    s: Schedule,
    *,
    fisher: np.ndarray,
    fisher_layers: Sequence[str],
    timesteps: Sequence[float],
    step_errors: Sequence[dict[str, float]] = (),
    engines: Sequence[dict[str, Any]] = (),
) -> list[Path]:
    """Render the figures and ``report.md`` into ``out.report``; returns the written files.

    ``fisher`` is I[t, l] over ``fisher_layers``; ``step_errors`` the per-step rows (step, timestep, config,
    avg_bits, relative_mse) of the stored quantized model, empty when there are no weights yet."""
    d = out.report
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    plot_fisher(fisher, fisher_layers, list(timesteps), d / "fisher_heatmap.png")
    plot_schedule(s, d / "bit_schedule.png")
    plot_pareto(s, d / "pareto_frontier.png")
    written += [d / "fisher_heatmap.png", d / "bit_schedule.png", d / "pareto_frontier.png"]
    rows = list(step_errors)
    if rows:
        plot_step_error(rows, d / "step_error.png")
        atomic_write_text(d / "step_error.json", json.dumps(rows, indent=1) + "\n")
        written += [d / "step_error.png", d / "step_error.json"]
    gptq_path = out.cache / "gptq_errors.json"
    gptq: dict[str, dict[str, float]] = json.loads(gptq_path.read_text()) if gptq_path.exists() else {}
    if gptq:
        plot_gptq_errors(gptq, d / "gptq_errors.png")
        written.append(d / "gptq_errors.png")
    wb = weight_bytes(out.weights) if out.weights.exists() else None
    fr = s.bit_fractions()
    md = [
        f"# adatsq compile report: {s.model}",
        "",
        f"- model: `{s.model_id}` ({s.model}), {s.steps} steps, resolution {list(s.resolution)}, "
        f"scheduler {s.sampler.scheduler}",
        *(
            [
                "- **not a real model**: random weights (`--random-weights`), for speed and memory only; no number "
                "here says anything about quality"
            ]
            if s.random_weights
            else []
        ),
        f"- achieved average activation bits: **{s.achieved_bits:.4f}** (target {s.target_bits}) over "
        f"{len(s.act_layers)} activation-quantized layers; {len(s.weight_only_layers)} weight-only layers",
        "- bit fractions (share of layer-steps): "
        + ", ".join(f"{b}-bit {100 * f:.1f}%" for b, f in fr.items()),
        f"- engines (distinct configurations): **{len(s.configs)}**",
        f"- per-step config ids: `{list(s.step_configs)}`",
        f"- weight bits: {sorted(set(s.weight_bits.values()))}, group size {s.group_size}",
    ]
    if wb:
        md.append(
            f"- weights: packed quantized weights + scales {wb['packed_weight_bytes'] / 2**20:.2f} MiB; "
            f"whole weights.safetensors {wb['file_bytes'] / 2**20:.2f} MiB; the same model in bf16 "
            f"{wb['bf16_equivalent_bytes'] / 2**20:.2f} MiB "
            f"(×{wb['bf16_equivalent_bytes'] / max(1, wb['file_bytes']):.2f} smaller)"
        )
    md += ["", "## Configurations", ""]
    md += _md_table(
        ["config", "steps", "avg bits", "/".join(map(str, ACT_BITS)) + "-bit layers", "engine"],
        [
            [
                k,
                ", ".join(str(i) for i, c in enumerate(s.step_configs) if c == k),
                f"{np.mean(cfg):.3f}",
                "/".join(str(sum(1 for b in cfg if b == w)) for w in ACT_BITS),
                next((e.get("plan") or "not built" for e in engines if e.get("config_id") == k), "not built"),
            ]
            for k, cfg in enumerate(s.configs)
        ],
    )
    md += [
        "",
        "## Bit schedule",
        "",
        "![bit schedule](bit_schedule.png)",
        "",
        "## Fisher information",
        "",
        "![Fisher heatmap](fisher_heatmap.png)",
        "",
        "## Pareto frontier",
        "",
        "![Pareto frontier](pareto_frontier.png)",
        "",
    ]
    md += _md_table(
        ["path", "avg bits", "cumulative loss", "metric", "selected"],
        [
            [
                i,
                f"{p.average_bits:.4f}",
                f"{p.cumulative_loss:.4g}",
                "—" if p.metric is None else f"{p.metric:.4g}",
                "**yes**" if p.selected else "",
            ]
            for i, p in enumerate(s.pareto)
        ],
    )
    if rows:
        md += [
            "",
            "## Per-step error against full precision",
            "",
            "Relative MSE ‖v_q − v_fp‖²/‖v_fp‖² of the velocity on the calibration latents of each step, "
            "quantized model loaded from weights.safetensors.",
            "",
            "![per-step error](step_error.png)",
            "",
        ]
        md += _md_table(
            ["step", "timestep", "config", "avg bits", "relative MSE"],
            [
                [
                    r["step"],
                    f"{r['timestep']:.1f}",
                    r["config"],
                    f"{r['avg_bits']:.3f}",
                    f"{r['relative_mse']:.4g}",
                ]
                for r in rows
            ],
        )
    if gptq:
        better = sum(1 for v in gptq.values() if v["gptq"] < v["rtn"])
        md += [
            "",
            "## Weight quantization: RTN vs Fisher-weighted GPTQ",
            "",
            f"GPTQ has the lower Hessian-weighted error in {better} of {len(gptq)} layers.",
            "",
            "![GPTQ errors](gptq_errors.png)",
        ]
    atomic_write_text(d / "report.md", "\n".join(md) + "\n")
    written.append(d / "report.md")
    return written
