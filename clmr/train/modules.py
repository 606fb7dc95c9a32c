"""What the engine trains: contrastive pre-training (SimCLR with an online linear probe) and the supervised
SampleCNN baseline, as plain modules with a training step, a validation step, their optimiser groups
and an export as a `clmr.models.CLMR`. The engine (`clmr.train.engine`) owns everything else.

State-dict keys are those of the exported model: `encoder.*` (SampleCNN; `encoder.fc.*` is the
supervised classifier), `projector.*`, `probe.*`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clmr.config import Config
from clmr.losses import nt_xent
from clmr.models import CLMR, Projector, SampleCNN
from clmr.models.clmr import split_classifier
from clmr.train.metrics import label_loss
from clmr.train.speed import compile_parts

VALID_STREAM = 1  # keeps validation augmentation draws apart from training ones


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers (seed, rank, step, ...); nearby tuples give unrelated seeds."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def _encoder(config: Config, n_classes: int | None = None) -> SampleCNN:
    encoder = SampleCNN(width=config.model.width, n_blocks=config.model.n_blocks, n_classes=n_classes)
    return encoder.kaiming_init() if config.model.init == "kaiming" else encoder


class ContrastiveModule(nn.Module):
    """SimCLR on raw audio: two views, `clmr.augment.Chain` on the device, SampleCNN -> projector -> NT-Xent.

    With `n_classes`, a linear probe on detached h (its own optimiser group, no gradient into the
    encoder) is trained alongside; its valid metric is a health signal.
    """

    def __init__(self, config: Config, n_classes: int | None = None, task: str | None = None, tags=None):
        super().__init__()
        self.config, self.task, self.tags = config, task, tags
        m = config.model
        self.encoder = _encoder(config)
        dim = self.encoder.out_dim
        self.projector = Projector(dim, m.projection_hidden or dim, m.projection_dim)
        self.augment: nn.Module | None = None
        if config.augment.enabled:
            from clmr.augment import Chain

            self.augment = Chain(sample_rate=config.sample_rate, **config.augment.chain_overrides())
        self.probe = nn.Linear(dim, n_classes) if (config.probe and n_classes and task) else None
        # the training step's encoder and projector, compiled with `trainer.compile`; plain dict: unregistered
        self.compiled = compile_parts(self, ("encoder", "projector")) if config.trainer.compile else {}

    def _views(self, x_i: torch.Tensor, x_j: torch.Tensor, key: tuple[int, ...]):
        """Augment both views on their device in float32 with a generator keyed by (seed, rank, stream, index)."""
        if self.augment is None:
            return x_i, x_j
        generator = torch.Generator(device=x_i.device)
        generator.manual_seed(mix_seed(self.config.seed, *key))
        with torch.no_grad(), torch.autocast(device_type=x_i.device.type, enabled=False):
            return self.augment(x_i.float(), generator=generator), self.augment(
                x_j.float(), generator=generator
            )

    def _contrastive(self, x_i: torch.Tensor, x_j: torch.Tensor, compiled: bool = False):
        """NT-Xent of the two views and their h; `compiled`: through the compiled parts, if any."""
        parts = self.compiled if compiled else {}
        encoder, projector = parts.get("encoder", self.encoder), parts.get("projector", self.projector)
        h_i, h_j = encoder(x_i), encoder(x_j)
        gather = self.config.loss.negatives == "global"
        loss = nt_xent(projector(h_i), projector(h_j), self.config.loss.temperature, gather=gather)
        return loss, h_i, h_j

    def training_step(self, batch, step: int, rank: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and the values to log."""
        x_i, x_j = self._views(batch[0], batch[1], (rank, 0, step))
        loss, h_i, h_j = self._contrastive(x_i, x_j, compiled=True)
        if self.probe is None:
            return loss, {"train/loss": loss.detach()}
        targets = torch.cat([batch[2], batch[2]])
        probe_loss = label_loss(self.probe(torch.cat([h_i, h_j]).detach()), targets, self.task)
        return loss + probe_loss, {"train/loss": loss.detach(), "train/probe_loss": probe_loss.detach()}

    def validation_step(self, batch, index: int, rank: int):
        """(loss, probe logits on clean crops, targets); the last two None without a probe."""
        x_i, x_j = self._views(batch[0], batch[1], (rank, VALID_STREAM, index))
        loss, _, _ = self._contrastive(x_i, x_j)
        if self.probe is None:
            return loss, None, None
        return loss, self.probe(self.encoder(batch[0])), batch[2]

    def param_groups(self) -> list[dict[str, Any]]:
        """Encoder + projector at `optim.lr`; the probe in its own group at `optim.probe_lr`."""
        o = self.config.optim
        groups = [{"params": [*self.encoder.parameters(), *self.projector.parameters()], "lr": o.lr}]
        if self.probe is not None:
            groups.append({"params": list(self.probe.parameters()), "lr": o.probe_lr, "weight_decay": 0.0})
        return groups

    def export(self, meta: dict[str, Any]) -> CLMR:
        """Encoder + projector as a CLMR model (sharing this module's weights)."""
        return CLMR(
            self.encoder,
            self.projector,
            sample_rate=self.config.sample_rate,
            meta={"objective": "contrastive", **meta},
        )


class SupervisedModule(nn.Module):
    """The reference supervised baseline: SampleCNN(n_classes) with dropout 0.5 trained end to end on one
    clean crop per track (BCE for tags, cross-entropy for classes). Exported as encoder + linear head
    named by the store's vocabulary."""

    def __init__(self, config: Config, n_classes: int, task: str, tags: list[str] | None = None) -> None:
        super().__init__()
        self.config, self.task, self.tags = config, task, tags
        self.encoder = _encoder(config, n_classes)
        self.compiled = compile_parts(self, ("encoder",)) if config.trainer.compile else {}

    def training_step(self, batch, step: int, rank: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The label loss of one crop per track."""
        loss = label_loss(self.compiled.get("encoder", self.encoder)(batch[0]), batch[1], self.task)
        return loss, {"train/loss": loss.detach()}

    def validation_step(self, batch, index: int, rank: int):
        """(loss, logits, targets): the classifier is its own probe."""
        logits = self.encoder(batch[0])
        return label_loss(logits, batch[1], self.task), logits, batch[1]

    def param_groups(self) -> list[dict[str, Any]]:
        """One group: the whole network end to end."""
        return [{"params": list(self.parameters()), "lr": self.config.optim.lr}]

    def export(self, meta: dict[str, Any]) -> CLMR:
        """The encoder without its `fc` (so `embed` gives h) plus `fc` as a linear head with tag names."""
        encoder, head = split_classifier(self.encoder)
        return CLMR(
            encoder,
            head=head,
            sample_rate=self.config.sample_rate,
            tags=self.tags,
            task=self.task,
            meta={"objective": "supervised", **meta},
        )


def build_optimizer(module: nn.Module, config: Config):
    """The config's optimiser over the module's groups, and its ReduceLROnPlateau (or None). Adam runs
    as torch's fused kernel when every parameter is on a CUDA device (same update, fewer launches)."""
    o = config.optim
    groups = module.param_groups()
    if o.optimizer == "sgd":
        opt = torch.optim.SGD(
            groups, lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0, weight_decay=o.weight_decay
        )
    else:
        on_cuda = all(p.device.type == "cuda" for group in groups for p in group["params"])
        opt = torch.optim.Adam(
            groups, lr=o.lr, weight_decay=o.weight_decay, **({"fused": True} if on_cuda else {})
        )
    if o.plateau_factor is None:
        return opt, None
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=o.plateau_factor, patience=o.plateau_patience
    )
