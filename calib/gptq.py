"""GPTQ weight quantization (uniform and Fisher-weighted) onto the integer grid of DESIGN.md contract 1.

GPTQ (Frantar et al., IST-DASLab/gptq) quantizes W (N×K) column by column, minimising the layer output error

    E(Ŵ) = Σ_i ‖(W − Ŵ) x_i‖² = trace((W − Ŵ) H (W − Ŵ)ᵀ),   H = Σ_i x_i x_iᵀ,

by the optimal-brain-surgeon update: after rounding column j, the error e = (w_j − ŵ_j)/U[j,j] is spread over
the not-yet-quantized columns, W[:, j+1:] −= e·U[j, j+1:], where U is the upper Cholesky factor of H⁻¹
(H⁻¹ = Uᵀ U). Updates are applied lazily per block of columns (one GEMM per block).

AdaTSQ feeds the Fisher-weighted H' = Σ_t α_{t,l} X_{t,l} X_{t,l}ᵀ (:func:`fisher_alpha` gives α), which
minimises Σ_t α_t ‖(W − Ŵ) X_t‖² instead.

The quantizer is the one of ``plugins/reference``: symmetric, per output channel and per group of G along K,
scale s = absmax/qmax rounded to float16, codes q = clamp(round(w/s), −qmax−1, qmax); the value GPTQ commits
to is exactly q·s, so ``dequantize_weight(codes, scales)`` is the GPTQ result.
"""

from __future__ import annotations

import warnings

import torch

from adatsq.plugins.reference import effective_group, qmax, weight_scale

__all__ = ["fisher_alpha", "gptq_quantize", "uniform_alpha", "weighted_reconstruction_error"]

_MAX_DAMP_RETRIES = 8
#: K×K float64 buffers live at once at gptq_quantize's peak: the symmetrised H and two of the Cholesky chain
#: H + λI → L → H⁻¹ → U (:func:`_upper_cholesky_of_inverse`)
GPTQ_PEAK_KK = 3
#: bytes per K² beyond the buffers above that the allocator's peak held: 0.35 GiB at N×K = 3072×15360 on an
#: H100 (the Cholesky solvers' workspace, which grows with K; 1 MB at 3072×12288), 2026-12-07; 4 covers it 2.5×
GPTQ_WORKSPACE_KK = 4


def gptq_peak_bytes(n: int, k: int) -> int:
    """GPU bytes quantizing one N×K layer takes at its peak: GPTQ's float64 K×K buffers, the layer's float32
    Hessian the caller holds, the solvers' workspace (``GPTQ_WORKSPACE_KK`` bytes per K²) and the N×K working
    copies (W in float64 and float32, W·R, the codes); the quantize stage keeps this much beside the Hessian
    accumulators (``tests/gpu/test_gptq_gpu.py`` checks it against the allocator's peak)."""
    return 8 * k * k * GPTQ_PEAK_KK + 4 * k * k + GPTQ_WORKSPACE_KK * k * k + 40 * n * k


#: replay GPTQ's column loop as a CUDA graph on the GPU (:func:`_graphed_blocks`); False: the eager loop
CUDA_GRAPHS = True


def _check_inputs(w: torch.Tensor, hessian: torch.Tensor, bits: int) -> None:
    if w.dim() != 2:
        raise ValueError(f"gptq: weight must be N×K, got shape {tuple(w.shape)}")
    k = w.shape[1]
    if tuple(hessian.shape) != (k, k):
        raise ValueError(
            f"gptq: hessian must be {k}×{k} for weight {tuple(w.shape)}, got {tuple(hessian.shape)}"
        )
    if bits < 2 or bits > 8:
        raise ValueError(f"gptq: bits must be in [2, 8], got {bits}")
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError("gptq: hessian contains NaN or inf")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("gptq: weight contains NaN or inf")


def _upper_cholesky_of_inverse(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """U with H_damped⁻¹ = Uᵀ·U (upper triangular), H_damped = H + λ·mean(diag H)·I, in float64.

    λ starts at ``percdamp`` and grows tenfold (with a warning) while a Cholesky factorisation fails.
    """
    mean_diag = float(torch.diagonal(h).mean())
    mean_diag = mean_diag if mean_diag > 0 else 1.0
    damp = percdamp
    for attempt in range(_MAX_DAMP_RETRIES):
        # H + λ·I with λ added on the diagonal only (no K×K identity); hd → L → H⁻¹ → U, each freed once
        # the next exists, so at most two K×K float64 buffers live beside ``h`` (GPTQ_PEAK_KK)
        hd = h.clone()
        hd.diagonal().add_(damp * mean_diag)
        lower, info = torch.linalg.cholesky_ex(hd)
        del hd
        if int(info) == 0:
            hinv = torch.cholesky_inverse(lower)
            del lower
            upper, info = torch.linalg.cholesky_ex(hinv, upper=True)
            del hinv
            if int(info) == 0 and bool(torch.isfinite(upper).all()):
                return upper
            del upper
        else:
            del lower
        new_damp = max(damp * 10.0, 1e-6)
        warnings.warn(
            f"gptq: Cholesky failed with relative damping {damp:g} (attempt {attempt + 1}); retrying with "
            f"{new_damp:g}",
            RuntimeWarning,
            stacklevel=3,
        )
        damp = new_damp
    raise RuntimeError(f"gptq: Hessian not positive definite even with relative damping {damp:g}")


def _aligned_blocksize(blocksize: int, g: int, k: int) -> int:
    """A block size such that every group starts at a block start or lies inside one block.

    Then the weights of a group are fully updated (all earlier columns' errors applied) when the group
    starts, which is when its scale is fitted: blocks are multiples of G (G ≤ blocksize) or divisors of G.
    """
    blocksize = max(1, min(blocksize, k))
    if g <= blocksize:
        return (blocksize // g) * g
    for d in range(blocksize, 0, -1):
        if g % d == 0:
            return d if d >= max(1, blocksize // 4) else g
    return g  # pragma: no cover


def _quantize_column(w: torch.Tensor, scale16: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes clamp(round(w/s), −q−1, q) in float32 as ``quantize_weight_rtn`` does, and the value codes·s."""
    s = scale16.float()
    safe = torch.where(s > 0, s, torch.ones_like(s))  # a float16 underflow to 0 dequantizes to 0 anyway
    codes = torch.clamp(torch.round(w.float() / safe), -q - 1, q)
    codes = torch.where(s > 0, codes, torch.zeros_like(codes))
    return codes, codes * s


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int,
    blocksize: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
    scale_method: str = "absmax",
    fixed_scales: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize an (already rotated) weight W·R with GPTQ onto contract 1's grouped symmetric grid.

    Minimises trace((W − Ŵ) H (W − Ŵ)ᵀ) greedily column by column (see the module docstring):

    1. dead columns (H[j,j] = 0) get H[j,j] = 1 and W[:, j] = 0 (their code is 0);
    2. damping H += percdamp·mean(diag H)·I (relative, so H's overall scale is irrelevant), then
       U = upper Cholesky factor of H⁻¹ (float64; on failure the damping grows tenfold with a warning);
    3. for each column j: the scale of j's group is fitted when the group starts, over the group's
       already-updated weights (GPTQ's group refit), by ``scale_method`` (plugins/reference.weight_scale:
       fp16(absmax/qmax), or the least-squares shrink of it); q_j = clamp(round(w_j/s), −qmax−1, qmax),
       e = (w_j − q_j·s)/U[j,j], W[:, j+1:] −= e·U[j, j+1:] (lazily, per block of ``blocksize`` columns).

    With ``act_order`` columns are visited in order of decreasing H[j,j], but the groups stay the contiguous
    groups of the original column order and their scales are fitted on the original W before any update
    (the reference's ``static_groups``), so the output layout is exactly contract 1's.

    Args:
        w: W·R, N×K, any float dtype (computed in float32; the Cholesky in float64).
        hessian: H = Σ x̃ x̃ᵀ of the rotated inputs (K×K, symmetric PSD, any positive scale), possibly
            Fisher-weighted H' = Σ_t α_t X_t X_tᵀ.
        bits: weight bits w (codes in [−2^(w−1), 2^(w−1)−1]).
        group_size: G; one group of K when G does not divide K (``effective_group``).
        blocksize: columns per lazy-update block (adjusted so groups align with blocks).
        percdamp: relative damping λ.
        act_order: quantize columns in order of decreasing H[j,j] (static groups).
        scale_method: how each group's scale is fitted (``absmax`` or ``mse``, plugins/reference.SCALE_METHODS).
        fixed_scales: the group scales (N×(K/G) float16) fitted beforehand on the original W, used as they are
            (no refit), e.g. the power-of-two ladder of plugins/reference.granular_weight_scale: a refit of
            the updated weights would step up the ladder (2× coarser) wherever GPTQ's updates grew a group's
            maximum past its step.

    Returns:
        (codes int8 N×K, scales float16 N×(K/G)) with ``dequantize_weight(codes, scales)`` the GPTQ weight.
    """
    _check_inputs(w, hessian, bits)
    n, k = w.shape
    g = effective_group(k, group_size)
    q = qmax(bits)
    device = w.device

    h = hessian.detach().to(device=device, dtype=torch.float64)
    h = h + h.t()  # H ← (H + Hᵀ)·0.5, the halving in place: two K×K float64 buffers at the peak, not three
    h.mul_(0.5)
    weight = w.detach().to(torch.float32).clone()

    dead = torch.diagonal(h) <= 0
    if bool(dead.any()):
        h[dead, dead] = 1.0
        weight[:, dead] = 0.0

    groups = k // g
    scales = torch.empty(n, groups, dtype=torch.float16, device=device)
    if fixed_scales is not None:
        if tuple(fixed_scales.shape) != (n, groups):
            raise ValueError(f"fixed_scales must be N×(K/G) = {(n, groups)}, got {tuple(fixed_scales.shape)}")
        scales.copy_(fixed_scales)
    perm: torch.Tensor | None = None
    if act_order:
        # Static groups: every group's scale from the original (dead-zeroed) W, original column order.
        for gi in range(groups):
            scales[:, gi] = weight_scale(weight[:, gi * g : (gi + 1) * g], bits, g, scale_method)[:, 0]
        perm = torch.sort(torch.diagonal(h), descending=True, stable=True).indices
        weight = weight[:, perm]
        h = h[perm][:, perm]
        blocksize = max(1, min(blocksize, k))
    else:
        blocksize = _aligned_blocksize(blocksize, g, k)

    hinv = _upper_cholesky_of_inverse(h, percdamp).to(torch.float32)
    codes = torch.zeros(n, k, dtype=torch.float32, device=device)

    if (
        CUDA_GRAPHS
        and fixed_scales is None
        and perm is None
        and device.type == "cuda"
        and blocksize % g == 0
        and k % blocksize == 0
    ):
        _graphed_blocks(weight, hinv, codes, scales, bits, g, q, blocksize, scale_method)
        return codes.to(torch.int8), scales

    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        w1 = weight[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if perm is None:
                gi = col // g
                if col % g == 0 and fixed_scales is None:
                    # Aligned blocks: the group lies inside w1 (updated up to column col), or it starts at
                    # this block's start (i == 0) where the lazily updated ``weight`` is complete.
                    group_w = w1[:, i : i + g] if col + g <= i2 else weight[:, col : col + g]
                    scales[:, gi] = weight_scale(group_w, bits, g, scale_method)[:, 0]
            else:
                gi = int(perm[col]) // g
            wcol = w1[:, i]
            c, qcol = _quantize_column(wcol, scales[:, gi], q)
            codes[:, col] = c
            e = (wcol - qcol) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        weight[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    return codes.to(torch.int8), scales


def _block_columns(
    w1: torch.Tensor,
    hinv1: torch.Tensor,
    codes1: torch.Tensor,
    err1: torch.Tensor,
    scales1: torch.Tensor,
    bits: int,
    g: int,
    q: int,
    scale_method: str = "absmax",
) -> None:
    """The column loop of one block whose groups start inside it (block size a multiple of G): the same
    operations as the general loop of :func:`gptq_quantize`, on fixed buffers, so a CUDA graph can hold them."""
    for i in range(w1.shape[1]):
        if i % g == 0:
            scales1[:, i // g] = weight_scale(w1[:, i : i + g], bits, g, scale_method)[:, 0]
        wcol = w1[:, i]
        c, qcol = _quantize_column(wcol, scales1[:, i // g], q)
        codes1[:, i] = c
        e = (wcol - qcol) / hinv1[i, i]
        w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
        err1[:, i] = e


def _graphed_blocks(
    weight: torch.Tensor,
    hinv: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    g: int,
    q: int,
    blocksize: int,
    scale_method: str = "absmax",
) -> None:
    """GPTQ's blocks on the GPU with the column loop captured once as a CUDA graph and replayed per block.

    Eagerly, every column costs about 14 tiny kernels, each bound by its launch (~130 µs a column on the
    H200: 5 minutes for Flux-dev's 2.4 M columns); a replay launches the block's ~1800 kernels at once. The
    kernels are those of the eager loop, on buffers of one block, so the result is the same bits."""
    n, k = weight.shape
    w1 = torch.empty(n, blocksize, dtype=weight.dtype, device=weight.device)
    hinv1 = torch.empty(blocksize, blocksize, dtype=hinv.dtype, device=hinv.device)
    codes1 = torch.empty_like(w1)
    err1 = torch.empty_like(w1)
    scales1 = torch.empty(n, blocksize // g, dtype=scales.dtype, device=scales.device)

    def run_block() -> None:
        _block_columns(w1, hinv1, codes1, err1, scales1, bits, g, q, scale_method)

    def load(i1: int) -> None:
        w1.copy_(weight[:, i1 : i1 + blocksize])
        hinv1.copy_(hinv[i1 : i1 + blocksize, i1 : i1 + blocksize])

    def store(i1: int) -> None:
        i2 = i1 + blocksize
        codes[:, i1:i2] = codes1
        scales[:, i1 // g : i2 // g] = scales1
        weight[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    # warm-up on a side stream (what capture requires), as block 0 itself
    side = torch.cuda.Stream(device=weight.device)
    side.wait_stream(torch.cuda.current_stream(weight.device))
    with torch.cuda.stream(side):
        load(0)
        run_block()
        store(0)
    torch.cuda.current_stream(weight.device).wait_stream(side)
    if k == blocksize:
        return
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_block()
    for i1 in range(blocksize, k, blocksize):
        load(i1)
        graph.replay()
        store(i1)


def fisher_alpha(fisher: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-layer temperature softmax over timesteps of the normalised Fisher information.

    α[t, l] = exp(Î[t, l]/τ) / Σ_s exp(Î[s, l]/τ),   Î[t, l] = I[t, l] / mean_s I[s, l].

    The per-layer normalisation by the mean over steps makes Î dimensionless (mean 1 for every layer), so
    α does not change when a layer's Fisher is scaled by a constant, and one τ means the same thing across
    layers and models whose Fisher magnitudes differ by orders of magnitude. τ → ∞ gives uniform α = 1/T;
    τ → 0 puts all the weight on argmax_t I[t, l]. A layer whose Fisher is zero at every step gets uniform α.

    Args:
        fisher: I (T×L), I[t, l] ≥ 0, finite.
        tau: temperature τ > 0.

    Returns:
        α (T×L), each column summing to 1 (dtype of ``fisher`` if floating, else float32).
    """
    if fisher.dim() != 2:
        raise ValueError(f"fisher_alpha: fisher must be T×L, got shape {tuple(fisher.shape)}")
    if not tau > 0:
        raise ValueError(f"fisher_alpha: tau must be > 0, got {tau}")
    f = fisher.detach().to(torch.float64)
    if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
        raise ValueError("fisher_alpha: Fisher information must be finite and >= 0")
    mean = f.mean(dim=0, keepdim=True)
    live = mean > 0
    normalised = torch.where(live, f / torch.where(live, mean, torch.ones_like(mean)), torch.zeros_like(f))
    alpha = torch.softmax(normalised / tau, dim=0)
    out_dtype = fisher.dtype if fisher.dtype.is_floating_point else torch.float32
    return alpha.to(out_dtype)


def uniform_alpha(fisher: torch.Tensor) -> torch.Tensor:
    """α[t, l] = 1/T for every layer (the τ → ∞ limit of :func:`fisher_alpha`): GPTQ without Fisher
    weighting, H = (1/T)·Σ_t X_t X_tᵀ, an ablation. Shape and dtype as :func:`fisher_alpha`'s."""
    if fisher.dim() != 2:
        raise ValueError(f"uniform_alpha: fisher must be T×L, got shape {tuple(fisher.shape)}")
    out_dtype = fisher.dtype if fisher.dtype.is_floating_point else torch.float32
    return torch.full(tuple(fisher.shape), 1.0 / fisher.shape[0], dtype=out_dtype)


def weighted_reconstruction_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor) -> float:
    """trace((W − Ŵ) H (W − Ŵ)ᵀ) = Σ_i ‖(W − Ŵ) x_i‖² for H = Σ_i x_i x_iᵀ, in float64."""
    if w.shape != w_hat.shape:
        raise ValueError(f"shapes differ: {tuple(w.shape)} vs {tuple(w_hat.shape)}")
    d = (w.detach().to(torch.float64) - w_hat.detach().to(torch.float64)).to(hessian.device)
    return float(((d @ hessian.detach().to(torch.float64)) * d).sum())
