"""Exceptions raised by fxdrop. Every message names the module or node, the reason and a way out."""

from __future__ import annotations

__all__ = ["FxdropError", "TraceError", "UnitError", "NotInitializedError", "DropStateError"]


class FxdropError(RuntimeError):
    """Base class of every error fxdrop raises on purpose."""


class TraceError(FxdropError):
    """The model (or a part that cannot be made a leaf) could not be traced into a torch.fx graph."""


class UnitError(FxdropError, KeyError):
    """An unknown unit name, or an operation that does not fit the unit's state."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotInitializedError(FxdropError):
    """Units are known only after the first forward call or when ``example_inputs`` are given."""


class DropStateError(FxdropError):
    """A saved drop state does not belong to this model or is malformed."""
