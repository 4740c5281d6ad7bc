"""What a map that keeps going returns: ``MapResult`` (a list) holding an ``ItemFailure``
in the place of each failed item."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import InvalidInputError, NodeError

__all__ = ["ON_ERROR", "ItemFailure", "MapResult", "check_on_error"]


class ItemFailure:
    """A map item that failed, in its place in a ``map(..., on_error="collect")`` result.

    Attributes:
        index: The item's index in the map.
        inputs: The item's own (mapped) input values, by name.
        error: The ``NodeError`` (its ``__cause__`` is the node's exception).
    """

    __slots__ = ("error", "index", "inputs")

    def __init__(self, index: int, inputs: dict[str, Any], error: NodeError) -> None:
        self.index = index
        self.inputs = inputs
        self.error = error

    def __repr__(self) -> str:
        return f"ItemFailure(index={self.index}, error={self.error})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemFailure):
            return NotImplemented
        return self.index == other.index and self.error is other.error

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (ItemFailure, (self.index, self.inputs, self.error))


class MapResult(list[Any]):
    """A map's results in item order, with ``ItemFailure`` where an item failed.

    Attributes:
        failures: The ``ItemFailure`` s, in index order.
        ok: Whether no item failed.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)

    @property
    def failures(self) -> list[ItemFailure]:
        """The failed items, in index order."""
        return [r for r in self if type(r) is ItemFailure]

    @property
    def ok(self) -> bool:
        """Whether every item succeeded."""
        return not any(type(r) is ItemFailure for r in self)

    def __repr__(self) -> str:
        failed = len(self.failures)
        return f"MapResult({list.__repr__(self)}{f', failures={failed}' if failed else ''})"


ON_ERROR = ("raise", "collect")


def check_on_error(on_error: object) -> bool:
    """``on_error`` as "collect failures?".

    Raises:
        InvalidInputError: Not ``"raise"`` or ``"collect"``.
    """
    if on_error == "collect":
        return True
    if on_error == "raise":
        return False
    raise InvalidInputError(
        f"on_error must be 'raise' (the first failure cancels the rest) or 'collect' "
        f"(every item runs; a failed one comes back as an ItemFailure), got {on_error!r}"
    )
