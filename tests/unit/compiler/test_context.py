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


def test_quantized_copy_shares_nothing_it_replaces_and_leaves_the_model(tmp_path) -> None:  # noqa: ANN001
    """The copy holds packed weights for the quantized linears (no copy of their float weights) and fresh
    copies of everything else; the model itself keeps its nn.Linear layers and values."""
    from adatsq.compiler.context import CompileContext
    from adatsq.compiler.settings import CompileConfig
    from adatsq.passes.quant_linear import QuantLinear

    ctx = CompileContext(CompileConfig(model="tiny-flux", target=3.1, out=str(tmp_path / "o"), device="cpu"))
    before = {n: p.clone() for n, p in ctx.model.state_dict().items()}
    qmodel = ctx.quantized_copy()
    quantized = set(ctx.inventory.quantized_layers)
    modules, qmodules = dict(ctx.model.named_modules()), dict(qmodel.named_modules())
    assert all(isinstance(qmodules[n], QuantLinear) for n in quantized)
    assert all(isinstance(modules[n], torch.nn.Linear) for n in quantized)
    model_ptrs = {p.data_ptr() for p in ctx.model.parameters()}
    assert not model_ptrs & {t.data_ptr() for t in qmodel.state_dict().values() if t.numel()}
    after = ctx.model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
