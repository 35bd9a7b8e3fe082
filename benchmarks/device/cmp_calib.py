"""Compare two calibration caches (cache/calibration.pt) tensor by tensor: max relative difference."""

import json
import sys

import torch


def walk(a, b, path, out):
    if isinstance(a, torch.Tensor):
        a, b = a.double(), b.double()
        d = float((a - b).abs().max() / a.abs().max().clamp_min(1e-300)) if a.numel() else 0.0
        out.append((path, d, bool(torch.equal(a, b))))
    elif isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            walk(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", out)
    elif hasattr(a, "__dict__"):
        walk(vars(a), vars(b), path, out)


out = []
walk(torch.load(sys.argv[1], weights_only=False), torch.load(sys.argv[2], weights_only=False), "", out)
print(
    json.dumps(
        {
            "tensors": len(out),
            "bit_equal": sum(e for _, _, e in out),
            "max_rel_diff": max((d for _, d, _ in out), default=0.0),
            "worst": sorted(out, key=lambda r: -r[1])[:5],
        },
        indent=1,
    )
)
