"""The training surface of :class:`fxdrop.DropNet`: what a training loop calls (``step`` or ``attach``)
and what it can listen to (``on_drop``); the policy that decides is plumbed in here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from .module import DropNet

__all__: list[str] = []


def resolve_policy(policy: Any) -> Any:
    """The policy ``wrap(..., policy=)`` names: ``"default"`` is a :class:`fxdrop.LearnAndDrop` with its
    defaults, anything else is used as given (``None``: no policy)."""
    if isinstance(policy, str) and policy == "default":
        from .policies import LearnAndDrop  # the policies know the wrapper only by type

        policy = LearnAndDrop()
    return policy


class _Stepping:
    """Mixin of :class:`fxdrop.DropNet`: the policy at work in the training loop.

    Relies on ``policy``, ``steps``, ``_optimizer`` and ``_drop_listeners`` (set up by ``DropNet``) and
    on the unit operations ``drop``/``freeze``/``_require_units`` (``fxdrop.dropping``).
    """

    policy: Any
    steps: int
    _optimizer: torch.optim.Optimizer | None
    _drop_listeners: list[Callable[..., None]]

    def on_drop(self, fn: Callable[["DropNet", list[str], str], None]) -> Callable[..., None]:
        """Call ``fn(net, names, event)`` after every drop (``event="drop"``) or restore; returns ``fn``."""
        self._drop_listeners.append(fn)
        return fn

    def step(self, optimizer: torch.optim.Optimizer | None = None, *, targets: torch.Tensor | None = None) -> list[str]:
        """Call once after every ``optimizer.step()``: advances the step count, lets the policy score
        the units at interval boundaries and drops (or freezes) what it decides. Returns those names.

        Passing the ``optimizer`` (or using :meth:`attach`) lets the scores discount the learning rate;
        passing the step's class labels ``targets`` lets drop checks measure accuracy on held batches
        (without them they bound it by the share of predictions that change)."""
        self._require_units()
        self.steps += 1
        if self.policy is None:
            return []
        if targets is not None:
            self.policy.observe_targets(self.steps, targets)
        if self.policy.net is not self:
            self.policy.bind(self)
        optimizer = optimizer or self._optimizer
        if optimizer is not None and optimizer is not getattr(self.policy, "optimizer", None):
            self.policy.observe_optimizer(optimizer)
        if optimizer is not None:
            lrs = [float(g["lr"]) for g in optimizer.param_groups]
            self.policy.observe_lr(sum(lrs) / len(lrs))
        names = self.policy.decide(self.steps)
        if not names:
            return []
        done = self.freeze(*names) if self.policy.action == "freeze" else self.drop(*names)
        self.policy.committed(done)
        return done

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call :meth:`step` after every ``optimizer.step()`` through a step post-hook; returns the hook
        handle (``handle.remove()`` detaches)."""
        self._optimizer = optimizer
        if self.policy is not None:
            self.policy.observe_optimizer(optimizer)
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step())

    def new_data(self) -> None:
        """Say that the training data changed (a new task, new classes, another domain): at the next
        boundary LearnAndDrop puts every dropped unit back on trial, and those the new data does not need
        go again. Optional: a jump of the training loss is noticed without it (units come back when it
        jumps above ``ln C / 2``). A policy without returns ignores it."""
        tell = getattr(self.policy, "new_data", None)
        if tell is not None:
            tell()
