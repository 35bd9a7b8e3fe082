"""sample_paths: many per-step-configured sampling loops with their shared prefixes sampled once. Exact on the
CPU against one run_sampler per path, for a single-step scheduler (Flux: flow-match Euler) and a multistep one
with classifier-free guidance (Wan: UniPC keeps a history the fork must copy)."""

from __future__ import annotations

import pytest
import torch
from helpers.calibration import tiny_inputs

from adatsq.core.models import run_sampler, sample_paths

PATHS = [  # one configuration per step; shared prefixes of 3, 1 and 0 steps, and a repeated path
    (0, 0, 0, 1, 1),
    (0, 0, 0, 2, 1),
    (0, 1, 1, 1, 1),
    (2, 2, 2, 2, 2),
    (0, 0, 0, 1, 1),
]
TRIE_NODES = 5 + 2 + 4 + 5  # distinct prefixes


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-wan"])
def test_equals_one_loop_per_path_and_samples_each_prefix_once(name: str) -> None:
    spec, fam, model, cond, noise = tiny_inputs(2, name)
    config = {"c": 0}
    calls = []
    # the configuration scales the model's output, so paths that part give different samples
    model.register_forward_hook(lambda _m, _a, out: calls.append(1) or _scaled(out, 1.0 + 0.25 * config["c"]))

    def set_step(c: object) -> None:
        config["c"] = int(c)  # type: ignore[call-overload]

    finals: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        taken = sample_paths(fam, spec, model, noise, cond, PATHS, set_step, finals.__setitem__)
        per_call = len(calls) // taken  # Wan calls twice per step (guidance)
        assert taken == TRIE_NODES and len(calls) == per_call * TRIE_NODES
        for j, path in enumerate(PATHS):
            want = run_sampler(
                fam, spec, model, noise, cond, len(path), before_step=lambda i, p=path: set_step(p[i])
            )
            assert torch.equal(finals[j], want), (name, j)
    assert finals[0] is finals[4]  # equal paths: one trajectory
    assert not torch.equal(finals[0], finals[1]) and not torch.equal(finals[0], finals[2])


def _scaled(out: object, k: float) -> object:
    if isinstance(out, tuple):
        return (out[0] * k, *out[1:])
    sample = getattr(out, "sample", None)
    if sample is not None:
        out.sample = sample * k  # type: ignore[attr-defined]
        return out
    return out * k  # type: ignore[operator]


def test_rejects_paths_of_unequal_length() -> None:
    spec, fam, model, cond, noise = tiny_inputs(1)
    with pytest.raises(ValueError, match="one configuration per step"):
        sample_paths(fam, spec, model, noise, cond, [(0, 0), (0,)], lambda _c: None, lambda _j, _x: None)
    assert sample_paths(fam, spec, model, noise, cond, [], lambda _c: None, lambda _j, _x: None) == 0
