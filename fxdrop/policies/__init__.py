"""Drop policies: which units to drop, and when. One concern per module:

* :mod:`.base`: the interface a wrapped model drives (:class:`Policy`) and :class:`NoDrop`;
* :mod:`.learn_and_drop`: the method (:class:`LearnAndDrop`, the default);
* :mod:`.checks`: the held-batch loss every decision of it rests on;
* :mod:`.run_length`: the run's length where the LR scheduler states it;
* :mod:`.replays`: the baselines (random, earliest-first, fixed, layer freezing).
"""

from .base import NoDrop, Policy
from .learn_and_drop import LearnAndDrop
from .replays import FixedDrop, LayerFreezing, PositionDrop, RandomDrop

__all__ = ["Policy", "NoDrop", "LearnAndDrop", "RandomDrop", "PositionDrop", "FixedDrop", "LayerFreezing"]
