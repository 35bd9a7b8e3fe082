"""Pick the ADATSQ_RQ_KERNEL options for an end-to-end run from a bench_act A/B (``--variants cta,...``).

    python benchmarks/device/pick_rq_options.py bench_act_ab.json   # prints the options, e.g. "w2,occ3"

A variant qualifies only if every one of its rows is bit-identical to the first variant's (the CTA kernel's);
among those the one with the least Flux-dev-weighted time at M = 4608, a = 4 wins: per step the K = 3072
kernels see ~612 k tokens and the K = 12288 ones ~262 k (the fused double and single blocks). Prints "cta" when
no variant qualifies, so a broken kernel never reaches the end-to-end numbers.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

WEIGHTS = {3072: 612.0, 12288: 262.0}  # thousands of token rows per Flux-dev step


def main() -> None:
    rows = json.load(open(sys.argv[1]))["rows"]
    first = rows[0]["variant"]
    cost: dict[str, float] = defaultdict(float)
    broken: set[str] = set()
    for r in rows:
        if not r["same_as_first_variant"]:
            broken.add(r["variant"])
        if r["m"] == 4608 and r["a_bits"] == 4 and r["k"] in WEIGHTS:
            cost[r["variant"]] += WEIGHTS[r["k"]] * r["ms"]
    ok = {v: c for v, c in cost.items() if v not in broken and v != first}
    for v, c in sorted(cost.items(), key=lambda vc: vc[1]):
        print(
            f"{v or 'default'!s:>10}: {c / 4.608:8.2f} ms-equivalent{'  (digest differs)' if v in broken else ''}",
            file=sys.stderr,
        )
    print(min(ok, key=ok.__getitem__) if ok else "cta")


if __name__ == "__main__":
    main()
