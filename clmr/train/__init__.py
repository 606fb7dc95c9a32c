"""Pre-training with Lightning: contrastive (SimCLR) and supervised modules, the data side of training,
callbacks, and the run that ties them to a store and a run directory."""

from clmr.train.modules import ContrastiveModule, NonFiniteLossError, SupervisedModule
from clmr.train.run import RunDirError, build_trainer, pretrain, resolve_config

__all__ = [
    "ContrastiveModule",
    "NonFiniteLossError",
    "RunDirError",
    "SupervisedModule",
    "build_trainer",
    "pretrain",
    "resolve_config",
]
