"""The errors that mean "bad input": the CLIs print their one-line message and exit with code 2.

Anything else raised during a compile is an internal error and keeps its traceback (exit code 1).
"""

from __future__ import annotations

__all__ = ["CompileError", "InputError"]


class InputError(ValueError):
    """Base of every bad-input error; the message names the input and the fix."""


class CompileError(InputError):
    """Bad input to a compile (options, output directory, model folder)."""
