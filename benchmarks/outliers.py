"""Activation outliers of the trained shapes-flux (issue 15: why SmoothQuant and Q-DiT need not collapse here).

    python benchmarks/outliers.py --out benchmarks/results/outliers_shapes_flux.json

For every activation-quantized linear, over the FP sampling of ``--prompts`` evaluation prompts (one noise
seed each, all steps), from the input x (tokens × K):

* the channel outlier ratio max_j c_j / median_j c_j of the channel maxima c_j = max_tokens |x_j| (what
  SmoothQuant's s_j = c_j^α / max|W_j|^(1−α) and SVDQuant's branch act on; LLMs and Flux-dev are known for
  channels far above the rest);
* the A4 and A3 per-token per-group relative error ‖x − Q(x)‖² / ‖x‖² of contract 1's quantizer at the
  model's G, on x and on its Hadamard rotation x·R (the op's rotation, block-diagonal where the layer reads
  concatenated tensors): what the rotation buys on this model.

Prints per-layer rows sorted by the channel ratio and the medians; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from quality import EVAL_SEED  # the quality table's evaluation prompts and noise

from adatsq.core.models import family_of, get_spec, load_text_encoders, load_transformer, run_sampler
from adatsq.core.models.shapes.scenes import evaluation_set
from adatsq.plugins.hadamard import rotate_blocks
from adatsq.plugins.reference import dequantize_weight, quantize_activation


def _rel_error(x: torch.Tensor, bits: int, group: int) -> float:
    """‖x − Q(x)‖² / ‖x‖² for tokens × K activations (codes ⊙ scales per group, as for weights)."""
    deq = dequantize_weight(*quantize_activation(x, bits, group)).double()
    return float((x - deq).pow(2).sum() / x.pow(2).sum())


def measure(checkpoint: Path | None, prompts: int, steps: int | None) -> dict[str, Any]:
    spec = get_spec("shapes-flux")
    fam = family_of(spec)
    model = load_transformer(spec, checkpoint).float()
    inv = fam.inventory(model)
    evals = evaluation_set(prompts, seed=EVAL_SEED)
    texts = [t for _, t in evals]
    cond = fam.encode_prompts(load_text_encoders(spec, checkpoint), texts, spec)
    noise = fam.sample_noise(
        spec, model, spec.resolution, len(texts), torch.Generator().manual_seed(EVAL_SEED)
    )
    modules = dict(model.named_modules())
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in inv.act_layers}
    hooks = [
        modules[n].register_forward_pre_hook(
            lambda _m, args, n=n: inputs[n].append(args[0].detach().reshape(-1, args[0].shape[-1]).double())
        )
        for n in inv.act_layers
    ]
    with torch.no_grad():
        run_sampler(fam, spec, model, noise, cond, steps or spec.steps)
    for h in hooks:
        h.remove()
    rows = []
    for n in inv.act_layers:
        x = torch.cat(inputs.pop(n))
        c = x.abs().amax(dim=0)
        xr = rotate_blocks(x, fam.input_split(model, n))
        rows.append(
            {
                "layer": n,
                "K": x.shape[-1],
                "channel_ratio": float(c.max() / c.median()),
                "a4_error": _rel_error(x, 4, spec.group_size),
                "a4_error_rotated": _rel_error(xr, 4, spec.group_size),
                "a3_error": _rel_error(x, 3, spec.group_size),
                "a3_error_rotated": _rel_error(xr, 3, spec.group_size),
            }
        )
    rows.sort(key=lambda r: -r["channel_ratio"])
    keys = [k for k in rows[0] if k not in ("layer", "K")]
    return {
        "checkpoint": str(checkpoint or spec.hf_id),
        "prompts": len(texts),
        "steps": steps or spec.steps,
        "group_size": spec.group_size,
        "median": {k: statistics.median(r[k] for r in rows) for k in keys},
        "max": {k: max(r[k] for r in rows) for k in keys},
        "layers": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="shapes-flux checkpoint [the packaged one]")
    ap.add_argument("--prompts", type=int, default=2, help="evaluation prompts per GenEval category")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps [the model's default]")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    result = {"command": " ".join(sys.argv), **measure(args.checkpoint, args.prompts, args.steps)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| layer | K | channel max / median | A4 error | A4 rotated | A3 error | A3 rotated |")
    print("|---|---|---|---|---|---|---|")
    for r in [*result["layers"][:8], {"layer": "median over layers", "K": "", **result["median"]}]:
        print(
            f"| {r['layer']} | {r['K']} | {r['channel_ratio']:.1f} | {r['a4_error']:.4f} | "
            f"{r['a4_error_rotated']:.4f} | {r['a3_error']:.4f} | {r['a3_error_rotated']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
