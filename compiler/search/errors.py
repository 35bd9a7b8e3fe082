"""The one error type of the search stage."""

from __future__ import annotations

__all__ = ["SearchError"]


class SearchError(ValueError):
    """The search cannot produce a schedule (no path within the budget, no feasible expansion, bad metric).

    The message says what was asked, what is achievable and how to fix it.
    """
