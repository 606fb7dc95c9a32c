"""Training: one engine (Lightning Fabric + a loop of our own) for contrastive pre-training and the
supervised baseline, the objectives it trains, the data side, and the run that ties them to a store and
a run directory."""

from clmr.train.engine import Engine
from clmr.train.modules import ContrastiveModule, SupervisedModule
from clmr.train.run import RunDirError, pretrain, resolve_config
from clmr.train.speed import NonFiniteLossError

__all__ = [
    "ContrastiveModule",
    "Engine",
    "NonFiniteLossError",
    "RunDirError",
    "SupervisedModule",
    "pretrain",
    "resolve_config",
]
