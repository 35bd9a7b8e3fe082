"""model_fingerprint: exact (independent of thread count) and sensitive to a weight off the sampled grid."""

from __future__ import annotations

import torch

from adatsq.compiler.context import model_fingerprint


def test_fingerprint_is_exact_and_sees_every_weight() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(512, 64)  # 32768 weights: the strided sample reads every 8th
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = model_fingerprint(model)
        torch.set_num_threads(2)
        assert model_fingerprint(model) == one
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        model.weight.view(-1)[1] += 2.0**-10  # index 1: not in the sample
    assert model_fingerprint(model) != one
