"""GenEval-mini: an offline, deterministic GenEval for the coloured-shape world.

:func:`detect` finds (shape, colour, box) objects in an image; :func:`score` applies GenEval's rules for a
prompt's :class:`~adatsq.core.models.shapes.scenes.PromptSpec`; :func:`evaluate` aggregates accuracies per
category with bootstrap intervals.
"""

from __future__ import annotations

from adatsq.compiler.geneval.detect import Detection, detect
from adatsq.compiler.geneval.score import CategoryScore, GenEvalResult, evaluate, score

__all__ = ["CategoryScore", "Detection", "GenEvalResult", "detect", "evaluate", "score"]
