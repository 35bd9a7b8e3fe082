"""The pass contract: ``call(model or graph) -> PassResult(result, modified)`` with pre- and postconditions.

A pass declares ``requires`` (what must hold before: e.g. insertion of quantized linears requires that every
target is still a float ``nn.Linear``) and ``ensures`` (what holds after); ``__call__`` checks both around
``call``. Passes read no globals and no environment: everything comes through their constructor.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Generic, TypeVar

__all__ = ["Pass", "PassConditionError", "PassResult"]

T = TypeVar("T")


class PassConditionError(RuntimeError):
    """A pass's precondition or postcondition does not hold."""


@dataclasses.dataclass
class PassResult(Generic[T]):
    result: T
    modified: bool


class Pass(abc.ABC, Generic[T]):
    """Base class of every model and graph pass."""

    def requires(self, target: T) -> None:  # noqa: B027 - optional hook
        """Raise :class:`PassConditionError` if ``target`` is not a valid input."""

    def ensures(self, result: T) -> None:  # noqa: B027 - optional hook
        """Raise :class:`PassConditionError` if ``result`` breaks the pass's invariants."""

    @abc.abstractmethod
    def call(self, target: T) -> PassResult[T]: ...

    def __call__(self, target: T) -> PassResult[T]:
        self.requires(target)
        out = self.call(target)
        self.ensures(out.result)
        return out

    @property
    def name(self) -> str:
        return type(self).__name__
