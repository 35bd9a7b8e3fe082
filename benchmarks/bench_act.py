"""Time the fused rotation + per-group quantization kernel alone on every width of the four models.

    python benchmarks/bench_act.py --out $OUT [--tag NAME] [--widths 3072,12288] [--variants ,cta,w2]

Run on the GPU machine with the package importable and ``ADATSQ_KERNELS_LIB`` pointing at the library to
measure (two libraries, two runs, two tags: an A/B of a kernel change). ``--variants`` runs every row once per
value of ``ADATSQ_RQ_KERNEL`` (the kernel options of plugins/csrc/rotate_quant_warp.cu; the empty value is
the default table, ``cta`` the CTA kernel everywhere), so one library and one process compare kernels; rows
whose digest differs from the first variant's are flagged. For M ∈ {1024, 4608}, K ∈ the seven
widths, bf16 input, a = 4 (FP8 codes) and a = 8 (int8 codes), G = 128: the median time of CUDA-graph
replays, and the effective bandwidth of its compulsory traffic (read 2 B + write 1 B per element + scales)
against the memory floor that traffic implies, and the SHA-256 of the codes and scales (the inputs are seeded,
so equal digests across two libraries mean bit-identical outputs). Writes ``bench_act[_TAG].json`` into --out.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import pathlib

import torch
import triton.testing

from adatsq.plugins.kernels.api import quantize_activations

WIDTHS = (1536, 3072, 3840, 8960, 10240, 12288, 15360)
G = 128


def _measure(
    x: torch.Tensor,
    a_bits: int,
    fp8: bool,
    variant: str | None,
    first_digest: dict[tuple[int, int, int], str],
) -> dict[str, object]:
    m, k = x.shape
    ms = float(
        triton.testing.do_bench_cudagraph(
            lambda: quantize_activations(x, a_bits, G, True, fp8), rep=200, return_mode="median"
        )
    )
    nbytes = m * k * 3 + m * (k // G) * 4
    q, sx = quantize_activations(x, a_bits, G, True, fp8)
    digest = hashlib.sha256(q.view(torch.uint8).cpu().numpy().tobytes())
    digest.update(sx.cpu().numpy().tobytes())
    sha = digest.hexdigest()
    same = first_digest.setdefault((m, k, a_bits), sha) == sha
    tag = "" if variant is None else f" [{variant or 'default'}]"
    print(
        f"M={m} K={k} a={a_bits}{tag}: {ms * 1e3:8.1f} us  {nbytes / ms / 1e6:7.0f} GB/s"
        f"{'' if same else '  DIGEST DIFFERS from the first variant'}",
        flush=True,
    )
    return {
        "m": m,
        "k": k,
        "a_bits": a_bits,
        "variant": variant,
        "ms": ms,
        "gb_s": nbytes / ms / 1e6,
        "sha256": sha,
        "same_as_first_variant": same,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="comma-separated K")
    ap.add_argument(
        "--variants", default=None, help="comma-separated values of ADATSQ_RQ_KERNEL ('+' joins options)"
    )
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    variants = [None] if args.variants is None else [v.replace("+", ",") for v in args.variants.split(",")]
    torch.manual_seed(0)
    rows = []
    first_digest: dict[tuple[int, int, int], str] = {}
    for m in (1024, 4608):
        for k in WIDTHS:
            # drawn for every width in the same order as before --widths existed: the digests stay comparable
            x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
            x[:: max(1, m // 8)] *= 100.0  # outlier rows, as in bench_qlinear
            if k not in widths:
                continue
            for (a_bits, fp8), variant in itertools.product(((4, True), (8, False)), variants):
                if variant is not None:
                    os.environ["ADATSQ_RQ_KERNEL"] = variant
                rows.append(_measure(x, a_bits, fp8, variant, first_digest))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"bench_act{'_' + args.tag if args.tag else ''}.json"
    meta = {"device": torch.cuda.get_device_name(), "lib": os.environ.get("ADATSQ_KERNELS_LIB", "")}
    (out / name).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
