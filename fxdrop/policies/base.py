"""The policy interface: what a wrapped model tells its policy while it trains, and what it asks.

A policy decides at optimizer-step boundaries only: after every ``optimizer.step()`` the wrapper calls
:meth:`Policy.decide` with the 1-based step count and drops (or freezes) the units it names. Under
torch.distributed every rank computes its own state and rank 0's decision is broadcast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..distributed import agree

if TYPE_CHECKING:
    from ..module import DropNet
    from ..units import Unit

__all__ = ["Policy", "NoDrop", "ACTIONS"]

ACTIONS = ("drop", "freeze")


class Policy:
    """Base class. ``decide(step)`` returns the unit names to drop (or freeze) after optimizer step
    ``step`` (1-based); ``events`` records ``(step, names)`` of every decision, ``restored`` every
    ``(step, names)`` put back."""

    def __init__(self, action: str = "drop", never: Iterable[str] = ()):
        if action not in ACTIONS:
            raise ValueError(f"{type(self).__name__}: action must be one of {ACTIONS}, got {action!r}")
        if isinstance(never, str):
            raise TypeError(f"{type(self).__name__}: never= takes unit names, e.g. never=[{never!r}], not a string")
        self.action = action
        self.never = set(never)
        self.events: list[tuple[int, list[str]]] = []
        self.restored: list[tuple[int, list[str]]] = []
        self.net: DropNet | None = None

    def bind(self, net: "DropNet") -> None:
        """Called by the wrapper once its units are known. A policy keeps one run's state: it serves one
        wrapped model."""
        if self.net is not None and self.net is not net:
            raise ValueError(f"{type(self).__name__}: this policy already drives another wrapped model "
                             "(it keeps that run's state); pass a new policy to each fxdrop.wrap")
        unknown = self.never - {u.name for u in net.units}
        if unknown:
            raise ValueError(f"{type(self).__name__}: never= names unknown units {sorted(unknown)} "
                             f"(net.units lists the {len(net.units)} units)")
        self.net = net

    def live(self) -> list["Unit"]:
        """Units neither dropped nor frozen, in graph order."""
        if self.net is None:
            return []
        return [u for u in self.net.units if not u.dropped and not u.frozen]

    # ----------------------------------------------------------------- what the wrapper tells the policy
    def observe_lr(self, lr: float) -> None:
        """The optimizer's mean learning rate after every step (when the wrapper knows the optimizer)."""

    def observe_inputs(self, step: int, args: tuple, kwargs: dict) -> None:
        """The inputs of every training forward (``step`` is the step it belongs to, 1-based)."""

    def observe_output(self, step: int, output: Any) -> None:
        """The output of every training forward (same ``step`` as :meth:`observe_inputs`)."""

    def observe_targets(self, step: int, targets: Any) -> None:
        """The class labels of step ``step``, when the loop passes them to ``net.step(targets=...)``."""

    def observe_optimizer(self, optimizer: Any) -> None:
        """The optimizer the wrapper was given (``net.step(opt)`` or ``net.attach(opt)``)."""

    def committed(self, names: list[str]) -> None:
        """Told after the wrapper dropped (or froze) ``names`` on this policy's decision."""

    # ----------------------------------------------------------------- the decision
    def decide(self, step: int) -> list[str]:
        """The names to act on after ``step``, agreed across ranks."""
        names = self._decide(step)
        if self.may_decide(step):  # a collective only where a decision can happen, not every step
            names = agree(names)
            self._agree()
        if names:
            self.events.append((step, list(names)))
        return names

    def _decide(self, step: int) -> list[str]:
        return []

    def _agree(self) -> None:
        """Make any other decision state rank 0's (called where :meth:`decide` broadcasts its names)."""

    def may_decide(self, step: int) -> bool:
        """Whether ``step`` can bring a decision (the same answer on every rank). Every step by default."""
        return True

    def state_dict(self) -> dict:
        return {"events": [(s, list(n)) for s, n in self.events],
                "restored": [(s, list(n)) for s, n in self.restored]}

    def load_state_dict(self, sd: dict) -> None:
        self.events = [(int(s), list(n)) for s, n in sd.get("events", [])]
        self.restored = [(int(s), list(n)) for s, n in sd.get("restored", [])]


class NoDrop(Policy):
    """Never drops anything: the full network, and how to turn the default policy off."""

    def may_decide(self, step: int) -> bool:
        return False
