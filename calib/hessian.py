"""Exact accumulation of a linear layer's input second moment H = Σ_t α_t X_t X_tᵀ for GPTQ.

For a linear y = x·Wᵀ with inputs x ∈ R^K, GPTQ minimises Σ_i ‖(W − Ŵ) x_i‖² = trace((W − Ŵ) H (W − Ŵ)ᵀ)
and sees the data only through H = Σ_i x_i x_iᵀ (K×K). Feeding √α·x instead of x gives
H' = Σ α x xᵀ, the Fisher-weighted Hessian of AdaTSQ (H'_l = Σ_t α_{t,l} X_{t,l} X_{t,l}ᵀ).

Unlike IST-DASLab/gptq's running mean (H = 2/n Σ x xᵀ with n counting sequences), this keeps the plain
weighted sum: GPTQ's damping is relative to mean(diag H), so the overall scale of H does not matter, and a
plain sum merges exactly across calibration shards.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from adatsq.calib import distributed

__all__ = ["HessianAccumulator"]


class HessianAccumulator:
    """Running H = Σ weight · x xᵀ over every token fed to :meth:`add`.

    Attributes:
        k: input width K.
        count: number of tokens (rows of x after flattening the leading dims) seen so far.
        total_weight: Σ weight · tokens, the total α-mass in H.
    """

    def __init__(
        self, k: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> None:
        """Create an empty accumulator.

        Args:
            k: input width K (H is K×K).
            dtype: accumulation dtype; float64 by default so that sums over many tokens stay exact enough.
            device: where H lives; inputs are moved there.
        """
        if k < 1:
            raise ValueError(f"HessianAccumulator: k must be positive, got {k}")
        self.k = int(k)
        self._h = torch.zeros(self.k, self.k, dtype=dtype, device=device)
        self.count = 0
        self.total_weight = 0.0

    @property
    def dtype(self) -> torch.dtype:
        return self._h.dtype

    @property
    def device(self) -> torch.device:
        return self._h.device

    @property
    def matrix(self) -> torch.Tensor:
        """H = Σ weight · x xᵀ (K×K, symmetric positive semi-definite); a copy."""
        return self._h.clone()

    def add(self, x: torch.Tensor, weight: float = 1.0) -> None:
        """Accumulate H += weight · Xᵀ X with X = x flattened to (tokens × K).

        Equivalent to feeding √weight · x to a plain Σ x xᵀ (the √α trick): H' = Σ α_t X_t X_tᵀ.

        Args:
            x: inputs (..., K) in any float dtype.
            weight: α ≥ 0 applied to every token of this call.
        """
        if x.shape[-1] != self.k:
            raise ValueError(f"HessianAccumulator: expected inputs (..., {self.k}), got {tuple(x.shape)}")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"HessianAccumulator: weight must be finite and >= 0, got {weight}")
        x2 = x.detach().reshape(-1, self.k).to(device=self._h.device, dtype=self._h.dtype)
        if not bool(torch.isfinite(x2).all()):
            raise ValueError("HessianAccumulator: inputs contain NaN or inf")
        if weight != 0.0 and x2.shape[0]:
            self._h.addmm_(x2.t(), x2, alpha=weight)
        self.count += int(x2.shape[0])
        self.total_weight += weight * int(x2.shape[0])

    def merge(self, other: HessianAccumulator) -> HessianAccumulator:
        """Add another accumulator's sums into this one (in place) and return self."""
        if not isinstance(other, HessianAccumulator):
            raise TypeError(f"cannot merge {type(other).__name__} into HessianAccumulator")
        if other.k != self.k:
            raise ValueError(f"HessianAccumulator: cannot merge K={other.k} into K={self.k}")
        self._h += other._h.to(device=self._h.device, dtype=self._h.dtype)
        self.count += other.count
        self.total_weight += other.total_weight
        return self

    def all_reduce_(self) -> HessianAccumulator:
        """Sum H, the token count and the α-mass over the ranks of a torch.distributed run, in place (a
        no-op in one process): every rank then holds the H of all ranks' inputs, as :meth:`merge` would."""
        if distributed.world_size() == 1:
            return self
        distributed.all_reduce_sum_(self._h)
        totals = torch.tensor([float(self.count), self.total_weight], dtype=torch.float64)
        distributed.all_reduce_sum_(totals)
        self.count, self.total_weight = int(totals[0]), float(totals[1])
        return self

    def __iadd__(self, other: HessianAccumulator) -> HessianAccumulator:
        return self.merge(other)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the accumulator: ``{"k", "matrix", "count", "total_weight"}``."""
        return {
            "k": self.k,
            "matrix": self._h.clone(),
            "count": self.count,
            "total_weight": self.total_weight,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> HessianAccumulator:
        """Inverse of :meth:`state_dict`; the matrix keeps its stored dtype."""
        matrix = state["matrix"]
        k = int(state["k"])
        if tuple(matrix.shape) != (k, k):
            raise ValueError(f"HessianAccumulator: stored matrix {tuple(matrix.shape)} is not {k}×{k}")
        acc = cls(k, dtype=matrix.dtype, device=device)
        acc._h.copy_(matrix)
        acc.count = int(state["count"])
        acc.total_weight = float(state.get("total_weight", acc.count))
        return acc

    def __repr__(self) -> str:
        return f"HessianAccumulator(k={self.k}, count={self.count}, dtype={self.dtype})"
