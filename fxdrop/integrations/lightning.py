"""A Lightning callback for fxdrop (optional extra: ``pip install lightning``).

    trainer = L.Trainer(callbacks=[FxdropCallback(attr="model", example_inputs=(x,),
                                                  policy=fxdrop.LearnAndDrop())])

On ``setup`` it wraps ``getattr(pl_module, attr)`` with :func:`fxdrop.wrap` (the LightningModule's
``state_dict`` keys do not change: the wrapper shares the model's parameters under the same names);
when training starts it tells a :class:`fxdrop.LearnAndDrop` not given ``total_steps`` the run's
length (``trainer.estimated_stepping_batches``); after every optimizer step it calls
``net.step(optimizer)`` and logs units dropped, the forward FLOPs ratio and, at interval boundaries,
each live unit's change and continuation scores through the trainer's logger; it saves the drop state
in Lightning checkpoints and restores it on resume.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as e:
        raise ImportError("fxdrop.integrations.lightning needs Lightning: pip install lightning") from e

from ..module import DropNet, wrap

__all__ = ["FxdropCallback"]


class FxdropCallback(pl.Callback):
    """Wrap ``pl_module.<attr>`` with fxdrop, step its policy, log, checkpoint the drop state."""

    def __init__(self, attr: str = "model", example_inputs: Sequence[Any] | None = None, policy: Any = "default",
                 log_scores: bool = True, **wrap_kwargs: Any):
        self.attr, self.example_inputs, self.policy = attr, example_inputs, policy
        self.log_scores, self.wrap_kwargs = log_scores, wrap_kwargs
        self.net: DropNet | None = None
        self._pending: dict | None = None
        self._logged_step = -1

    @property
    def state_key(self) -> str:
        return f"FxdropCallback[{self.attr}]"

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if self.net is not None:
            return
        inner = getattr(pl_module, self.attr, None)
        if inner is None:
            raise AttributeError(f"FxdropCallback: {type(pl_module).__name__} has no attribute {self.attr!r} to wrap")
        self.net = inner if isinstance(inner, DropNet) else wrap(inner, self.example_inputs, policy=self.policy,
                                                                   **self.wrap_kwargs)
        setattr(pl_module, self.attr, self.net)
        self._apply_pending()

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # the policy derives its interval from the run's length, which Lightning knows once its data is set
        # up: tell it, unless the policy was given its own
        policy = self.net.policy if self.net is not None else None
        told = getattr(policy, "set_total_steps", None)
        if told is None or getattr(policy, "total_steps_given", True):
            return
        total = trainer.estimated_stepping_batches
        if isinstance(total, (int, float)) and math.isfinite(total) and total >= 1:
            told(int(total))

    def _apply_pending(self) -> None:
        if self._pending is not None and self.net is not None and self.net._units is not None:
            self.net.load_drop_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        net = self.net
        if net is None:
            return
        self._apply_pending()
        if trainer.global_step == self._logged_step or net._units is None:
            return  # gradient accumulation: only after real optimizer steps
        self._logged_step = trainer.global_step
        opt = trainer.optimizers[0] if trainer.optimizers else None
        net.step(opt, targets=_class_labels(batch))
        metrics = {"fxdrop/units_dropped": float(len(net.dropped)),
                   "fxdrop/flops_ratio": net.flops("train") / max(net.full_flops("train"), 1)}
        if self.log_scores:
            for u in net.units:
                if u.scores and u.scores[-1]["step"] == net.steps:
                    metrics[f"fxdrop/change/{u.name}"] = u.scores[-1]["change"]
                    if "continuation" in u.scores[-1]:
                        metrics[f"fxdrop/continuation/{u.name}"] = u.scores[-1]["continuation"]
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        if self.net is None or self.net._units is None:
            return {}
        return {"drop_state": self.net.drop_state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("drop_state") is not None:
            self._pending = state_dict["drop_state"]
            self._apply_pending()


def _class_labels(batch: Any) -> Any:
    """The class labels of an ``(inputs, labels, ...)`` batch, for drop checks that measure accuracy;
    ``None`` when the batch has no 1-d integer second element."""
    import torch

    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        y = batch[1]
        if isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point():
            return y
    return None
