"""CLQ's orthogonal-based smoothing and clip search (calib/obs.py): G = P·diag(R_b, …) is orthogonal and gathers
the outlier channels into the first block, x·G·(W·G)ᵀ = x·Wᵀ, the block width choice, the layer's online form
(a gather by perm, then the op's rotation per block) computes x·G, OBS lowers the W4A4 error of a layer with
outlier channels against plain round-to-nearest, and the clip search returns the least Hessian-weighted error
of its grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.outliers import K, N, outlier_layer, w4a4_error
from safetensors.torch import save_file
from torch import nn

from adatsq.calib.obs import (
    CLIP_RATIOS,
    clip_search,
    obs_block,
    obs_blocks,
    obs_matrix,
    obs_permutation,
    outlier_scores,
)
from adatsq.passes.base import PassConditionError
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant
from adatsq.passes.weight_store import LoadQuantizedWeightsPass, load_weight_store, save_weight_store
from adatsq.plugins.hadamard import rotate_blocks, rotation_matrix
from adatsq.plugins.reference import dequantize_weight, qmax, quantize_weight_rtn


def test_g_is_orthogonal_and_puts_the_outliers_in_the_first_block() -> None:
    x, lin, outliers = outlier_layer()
    scores = outlier_scores(x.abs().amax(dim=0), lin.weight)
    g = obs_matrix(scores, 128)
    torch.testing.assert_close(g @ g.t(), torch.eye(K, dtype=torch.float64), rtol=0, atol=1e-12)
    perm = obs_permutation(scores, 128)
    assert set(outliers.tolist()) <= set(perm[:128].tolist())  # the outliers share the first block
    top = set(torch.sort(scores, descending=True).indices[:128].tolist())
    assert set(perm[:128].tolist()) == top and torch.equal(perm[:128], torch.sort(perm[:128]).values)
    # x·G = [x[:, perm[:128]]·R_128, x[:, perm[128:]]·R_128]
    r = rotation_matrix(128)
    xd = x.double()
    want = torch.cat([xd[:, perm[:128]] @ r, xd[:, perm[128:]] @ r], dim=1)
    torch.testing.assert_close(xd @ g, want, rtol=0, atol=1e-9)
    w = lin.weight.detach().double()
    torch.testing.assert_close((xd @ g) @ (w @ g).t(), xd @ w.t(), rtol=0, atol=1e-9)
    # the layer's online form: the gather x[..., perm], then R_b per block (the op's rotation)
    torch.testing.assert_close(rotate_blocks(xd[:, perm], obs_blocks(K, 128)), xd @ g, rtol=0, atol=1e-9)


def test_block_width() -> None:
    assert obs_block(256, 128, 2) == 128
    assert obs_block(192, 32, 2) == 96  # 96 = 12·8
    assert obs_block(3072, 128, 2) == 1536
    assert obs_block(768, 32, 4) == 192
    assert obs_block(256, 128, 4) == 128  # 64 would split a group: the next width that holds whole groups
    with pytest.raises(ValueError, match="no Hadamard block width"):
        obs_block(7 * 11, 7, 1)
    with pytest.raises(ValueError, match="does not divide"):
        obs_matrix(torch.ones(10), 4)
    assert obs_blocks(384, 192) == (192, 192)


def test_obs_beats_rtn_on_outlier_channels_and_is_exact_at_16_bits() -> None:
    x, lin, _ = outlier_layer()
    b = obs_block(K, 128, 2)
    perm = obs_permutation(outlier_scores(x.abs().amax(dim=0), lin.weight), b)
    rtn = w4a4_error(x, lin, rotation=False)
    obs = w4a4_error(x, lin, rotation=False, obs_perm=perm, obs_blocks=obs_blocks(K, b))
    print(f"W4A4 relative squared error: rtn {rtn:.3e}, clq obs {obs:.3e}")
    assert obs < 0.7 * rtn
    model = nn.Sequential(nn.Linear(K, N, bias=False))
    model[0].load_state_dict(lin.state_dict())
    InsertQuantLinearPass(
        {"0": LayerQuant(8, True, 128, rotation=False, obs_perm=perm, obs_blocks=obs_blocks(K, b))}
    )(model)
    q = model[0]
    # K indices stand for G, and the layer's rotation blocks are G's
    assert q.obs_perm is not None and q.obs_perm.dtype == torch.int32 and torch.equal(q.obs_perm.long(), perm)
    assert q.rotate_input and q.blocks == obs_blocks(K, b)
    with torch.no_grad():
        y, ref = q(x), lin(x)
    assert float((y - ref).pow(2).sum() / ref.pow(2).sum()) < 1e-4  # only the 8-bit weight rounding is left


def test_clip_search_is_the_grid_minimum() -> None:
    x, lin, _ = outlier_layer(1)
    w = lin.weight.detach().double()
    h = x.double().t() @ x.double()
    codes, scale, ratio, errors = clip_search(w, h, 3, 128)
    assert set(errors) == {str(r) for r in CLIP_RATIOS}
    assert errors[str(ratio)] == min(errors.values())
    d = dequantize_weight(codes, scale).double() - w
    assert float(torch.einsum("nk,kl,nl->", d, h, d)) == pytest.approx(errors[str(ratio)], rel=1e-12)
    absmax = w.float().reshape(N, K // 128, 128).abs().amax(dim=-1)
    c1, s1 = quantize_weight_rtn(w.float(), 3, 128, scale=(absmax / qmax(3)).to(torch.float16))
    d1 = dequantize_weight(c1, s1).double() - w
    assert float(torch.einsum("nk,kl,nl->", d1, h, d1)) == pytest.approx(errors["1.0"], rel=1e-12)
    assert ratio < 1.0  # at 3 bits clipping pays on Gaussian weights


def test_layer_rejects_what_is_not_a_permutation_of_a_rotated_layer() -> None:
    model = nn.Sequential(nn.Linear(K, N, bias=False))
    bad = torch.arange(K).flip(0)
    bad[0] = bad[1]
    with pytest.raises(ValueError, match="not a permutation"):
        InsertQuantLinearPass({"0": LayerQuant(8, True, 128, obs_perm=bad, obs_blocks=(128, 128))})(model)
    with pytest.raises(ValueError, match="go together"):
        LayerQuant(8, True, 128, obs_perm=torch.arange(K))
    with pytest.raises(ValueError, match="activation-quantized"):
        LayerQuant(8, False, 128, obs_perm=torch.arange(K), obs_blocks=(128, 128)).blocks(K)


def test_weight_store_keeps_the_permutation_and_refuses_a_dense_g(tmp_path: Path) -> None:
    """The store holds G as K int32 indices and the block record, and loads back the same layer; a store of the
    dense form (record ``obs``, before the tenth session) is refused with the fix."""
    x, lin, _ = outlier_layer()
    b = obs_block(K, 128, 2)
    perm = obs_permutation(outlier_scores(x.abs().amax(dim=0), lin.weight), b)
    model = nn.Sequential(nn.Linear(K, N, bias=False))
    model[0].load_state_dict(lin.state_dict())
    InsertQuantLinearPass(
        {"0": LayerQuant(4, True, 128, rotation=False, obs_perm=perm, obs_blocks=obs_blocks(K, b))}
    )(model)
    path = tmp_path / "w.safetensors"
    save_weight_store(path, model)
    tensors, layers, meta = load_weight_store(path)
    assert tensors["0.obs_perm"].dtype == torch.int32 and tensors["0.obs_perm"].shape == (K,)
    assert layers["0"]["obs_perm"] and layers["0"]["blocks"] == list(obs_blocks(K, b))
    fresh = nn.Sequential(nn.Linear(K, N, bias=False))
    LoadQuantizedWeightsPass(path)(fresh)
    model[0].a_bits = fresh[0].a_bits = 4
    with torch.no_grad():
        assert torch.equal(fresh[0](x), model[0](x))
    layers["0"]["obs"] = True
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={**meta, "adatsq.layers": json.dumps(layers)})
    with pytest.raises(PassConditionError, match="compile it again"):
        LoadQuantizedWeightsPass(old)(nn.Sequential(nn.Linear(K, N, bias=False)))


def test_permutation_ignores_order_inside_a_block() -> None:
    """Scores that rank differently but put the same channels in each block give the same perm (near-ties from
    float rounding of the statistics cannot reorder a block); a channel that changes block changes it."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(K, generator=gen, dtype=torch.float64)
    perm = obs_permutation(scores, 128)
    shuffled = scores.clone()
    first = perm[:128]
    shuffled[first] = scores[first][torch.randperm(128, generator=gen)]  # reorder inside the first block only
    assert torch.equal(obs_permutation(shuffled, 128), perm)
    moved = scores.clone()
    moved[perm[-1]] = 2.0  # the lowest channel becomes the top one: it joins the first block
    assert int(perm[-1]) in obs_permutation(moved, 128)[:128].tolist()
