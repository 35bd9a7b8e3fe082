"""fuse_projections: one qlinear call per attention's q/k/v (and Flux's text q/k/v, Wan's cross-attention k/v;
Flux's single blocks q/k/v and proj_mlp together, Z-Image's q/k/v and w1/w3) on tiny Flux, Wan and Z-Image,
equal to the unfused model (the CPU reference op), with the members' buffers views of the fused ones, bits still switched through the members,
and unfusable attentions left alone."""

from __future__ import annotations

import copy

import pytest
import torch

from adatsq.core.models import family_of, get_spec, load_transformer
from adatsq.passes.fuse_projections import FusedProjection, SharedInput, fuse_projections, use_fused
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant, quant_linears, set_activation_bits


def _quantized(name: str, smoothing: bool = False) -> tuple[torch.nn.Module, object, object]:
    spec = get_spec(name)
    fam = family_of(spec)
    torch.manual_seed(0)
    model = load_transformer(spec)
    inv = fam.inventory(model)
    g = spec.group_size
    layers = {n: LayerQuant(4, True, g) for n in inv.act_layers}
    layers.update({n: LayerQuant(4, False, g) for n in inv.weight_only})
    if smoothing:  # the first attention's to_q: smoothed, so that attention cannot be fused
        first = next(n for n in inv.act_layers if n.endswith("attn.to_q"))
        layers[first] = LayerQuant(4, True, g, smooth=torch.full((_width(model, first),), 2.0))
    InsertQuantLinearPass(layers)(model)
    return model.eval(), fam, spec


def _width(model: torch.nn.Module, name: str) -> int:
    return dict(model.named_modules())[name].in_features


def _velocity(fam, spec, model, cond, x):  # noqa: ANN001, ANN202
    with torch.no_grad():
        return fam.velocity(model, x, torch.tensor(500.0), cond, spec)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tiny-flux", {"to_qkv", "to_added_qkv", "shared_inputs"}),
        ("tiny-wan", {"to_qkv", "to_kv"}),
        ("tiny-zimage", {"shared_inputs"}),
    ],
)
def test_fused_equals_unfused_and_shares_the_weights(name: str, expected: set[str]) -> None:
    model, fam, spec = _quantized(name)
    fused = copy.deepcopy(model)
    count = fuse_projections(fused)
    kinds = {  # the fused op's attribute (a routed group's: shared_inputs)
        "shared_inputs" if ".shared_inputs." in n else n.rsplit(".", 1)[-1]
        for n, m in fused.named_modules()
        if isinstance(m, FusedProjection)
    }
    assert count > 0 and kinds == expected
    assert sorted(quant_linears(fused)) == sorted(quant_linears(model))  # every linear keeps its name
    for m in fused.modules():
        if isinstance(m, FusedProjection):
            base = m.w_packed.untyped_storage().data_ptr()
            assert all(q.w_packed.untyped_storage().data_ptr() == base for q in m.members)  # views, no copy
            assert m.out_features == sum(q.out_features for q in m.members)
    g = torch.Generator().manual_seed(1)
    cond = fam.synthetic_conditioning(spec, model, 1, g)
    x = fam.sample_noise(spec, model, spec.resolution, 1, g)
    members = {id(q) for m in fused.modules() if isinstance(m, FusedProjection) for q in m.members}
    calls: list[str] = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda mod, _a: (
            calls.append("fused" if isinstance(mod, FusedProjection) else "member")
            if isinstance(mod, FusedProjection) or (id(mod) in members and "forward" not in vars(mod))
            else None  # a member whose forward is routed to a SharedInput runs the fused op
        )
    )
    try:
        for bits in (4, 3, 8):
            set_activation_bits(model, dict.fromkeys(quant_linears(model), bits))
            set_activation_bits(fused, dict.fromkeys(quant_linears(fused), bits))
            ref, got = _velocity(fam, spec, model, cond, x), _velocity(fam, spec, fused, cond, x)
            assert torch.equal(got, ref), bits  # exact: the CPU op's integer products (test_runner.py)
    finally:
        hook.remove()
    assert "fused" in calls and "member" not in calls  # the fused ops ran, no member on its own


def test_members_at_different_bits_are_an_error() -> None:
    model, fam, spec = _quantized("tiny-flux")
    fuse_projections(model)
    fp = next(m for m in model.modules() if isinstance(m, FusedProjection))
    fp.members[0].a_bits, fp.members[1].a_bits = 3, 4
    with pytest.raises(RuntimeError, match="one activation bit width"):
        fp(torch.randn(1, 2, fp.in_features))


def test_an_attention_with_a_smoothed_member_stays_unfused() -> None:
    model, _fam, _spec = _quantized("tiny-flux", smoothing=True)
    first = next(n for n in quant_linears(model) if n.endswith("attn.to_q"))
    owner = dict(model.named_modules())[first.rsplit(".", 1)[0]]
    n = fuse_projections(model)
    assert n > 0 and not getattr(owner, "fused_projections", False) and not hasattr(owner, "to_qkv")
    with pytest.raises(ValueError, match="cannot fuse"):
        FusedProjection([owner.to_q, owner.to_k])


def _call_counter(model: torch.nn.Module) -> list[int]:
    """Calls of the routed groups' fused ops (one per group per forward when the input is shared)."""
    calls = [0]
    for m in model.modules():
        if isinstance(m, SharedInput):
            m.fused.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(("name", "groups_per_block"), [("tiny-flux", 1), ("tiny-zimage", 2)])
def test_routed_groups_run_one_op_per_group(name: str, groups_per_block: int) -> None:
    """Flux's single blocks (q/k/v + proj_mlp) and Z-Image's blocks (q/k/v; w1/w3): one op call per group per
    forward, each linear its own columns (exact) under its own name, and use_fused(model, False) gives back
    the linears' own forwards."""
    model, fam, spec = _quantized(name)
    fused = copy.deepcopy(model)
    fuse_projections(fused)
    shared = [m for m in fused.modules() if isinstance(m, SharedInput)]
    owners = [m for m in fused.modules() if hasattr(m, "shared_inputs")]
    assert shared and len(shared) == groups_per_block * len(owners)
    names = {id(m): n for n, m in quant_linears(fused).items()}
    assert all(id(q) in names and "forward" in vars(q) for s in shared for q in s.members)  # routed, named
    calls = _call_counter(fused)
    g = torch.Generator().manual_seed(2)
    cond = fam.synthetic_conditioning(spec, model, 1, g)
    x = fam.sample_noise(spec, model, spec.resolution, 1, g)
    set_activation_bits(model, dict.fromkeys(quant_linears(model), 3))
    set_activation_bits(fused, dict.fromkeys(quant_linears(fused), 3))
    ref = _velocity(fam, spec, model, cond, x)
    assert torch.equal(_velocity(fam, spec, fused, cond, x), ref)
    assert calls[0] == len(shared)
    use_fused(fused, False)
    assert not any("forward" in vars(q) for s in shared for q in s.members)
    assert torch.equal(_velocity(fam, spec, fused, cond, x), ref) and calls[0] == len(shared)
    use_fused(fused, True)
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)  # traced as one graph: no break
    with torch.no_grad():
        assert torch.equal(fam.velocity(compiled, x, torch.tensor(500.0), cond, spec), ref)


def test_a_routed_member_recomputes_for_another_or_modified_input() -> None:
    """Kept columns go only to another member, with the very tensor they were computed from."""
    model, _fam, _spec = _quantized("tiny-flux")
    fuse_projections(model)
    shared = next(m for m in model.modules() if isinstance(m, SharedInput))
    q, k, v, mlp = shared.members
    x = torch.randn(1, 5, shared.fused.in_features)
    full = shared.fused(x)
    cols = [full[..., a:b] for a, b in zip(shared.bounds, shared.bounds[1:])]
    assert all(torch.equal(m(x), c) for m, c in zip((mlp, q, k, v), (cols[3], *cols[:3])))  # any order
    other = x.clone()
    assert torch.equal(mlp(x), cols[3]) and torch.equal(q(other), cols[0])  # equal, not the same: computed
    assert torch.equal(k(other), cols[1])  # ... and kept for other's members
    mlp(x)
    x.mul_(2)  # modified in place after the call: its kept columns are stale
    assert torch.equal(q(x), shared.fused(x)[..., : shared.bounds[1]])
    assert torch.equal(
        q(x), shared.fused(x)[..., : shared.bounds[1]]
    )  # the same member twice: computed again
