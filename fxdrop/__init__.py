"""fxdrop: Learn&Drop as a torch.fx graph-transforming pass.

``fxdrop.wrap(model)`` traces a CNN, finds the units that can be bypassed without breaking shapes and
drops the ones that have stopped learning while it trains.
"""

from . import distributed
from .errors import DropStateError, FxdropError, NotInitializedError, TraceError, UnitError
from .module import DropNet, apply_plan, wrap
from .policies import FixedDrop, LayerFreezing, LearnAndDrop, NoDrop, Policy, PositionDrop, RandomDrop
from .rewrite import RewriteResult, bypass
from .trace import trace
from .units import Unit, UnitSite

__all__ = [
    "wrap",
    "apply_plan",
    "DropNet",
    "Unit",
    "UnitSite",
    "trace",
    "Policy",
    "LearnAndDrop",
    "RandomDrop",
    "PositionDrop",
    "NoDrop",
    "FixedDrop",
    "LayerFreezing",
    "bypass",
    "RewriteResult",
    "FxdropError",
    "TraceError",
    "UnitError",
    "NotInitializedError",
    "DropStateError",
]

__version__ = "0.1.0"
