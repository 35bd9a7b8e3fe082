"""The search stage: Fisher-guided per-step candidates, Pareto beam search over steps, final selection.

Pure algorithms: the caller measures each candidate's loss and supplies the end-to-end metric.
"""

from __future__ import annotations

from adatsq.compiler.search.beam import BEAM_RULES, Path, StepCandidate, pareto_beam_search, pareto_front
from adatsq.compiler.search.candidates import (
    Candidate,
    cluster_by_sensitivity,
    generate_candidates,
    weighted_average_bits,
)
from adatsq.compiler.search.errors import SearchError
from adatsq.compiler.search.select import BUDGET_TOL, cumulative_loss_metric, select_path

__all__ = [
    "BEAM_RULES",
    "BUDGET_TOL",
    "Candidate",
    "Path",
    "SearchError",
    "StepCandidate",
    "cluster_by_sensitivity",
    "cumulative_loss_metric",
    "generate_candidates",
    "pareto_beam_search",
    "pareto_front",
    "select_path",
    "weighted_average_bits",
]
