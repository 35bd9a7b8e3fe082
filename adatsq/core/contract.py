"""The numbers of DESIGN.md contract 1 that every room shares, spelled once.

Contract 1 (the quantized linear op) belongs to ``plugins/``, but the schedule format (``core/schedule.py``),
the search, the passes, the export and the runtime all need the widths it accepts, and the base package
imports no room: so the constants live here and ``plugins/`` imports them like everyone else.
"""

from __future__ import annotations

__all__ = ["ACT_BITS", "QUANTIZED_ACT_BITS", "UNQUANTIZED", "WEIGHT_BITS"]

#: Activation bits meaning "not quantized": the op runs x̃·(q_w ⊙ s_w)ᵀ in float.
UNQUANTIZED = 16
#: Activation widths that quantize (the search's choices per unit).
QUANTIZED_ACT_BITS = (3, 4, 8)
#: Every activation width the op accepts: a ∈ {3, 4, 8, 16}.
ACT_BITS = (*QUANTIZED_ACT_BITS, UNQUANTIZED)
#: Weight widths the op accepts: w ∈ {3, 4, 8} (one packing format each, plugins/formats.py).
WEIGHT_BITS = (3, 4, 8)
