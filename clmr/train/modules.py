"""Lightning modules: contrastive pre-training (SimCLR with an online linear probe) and the supervised
SampleCNN baseline. Both export themselves as a `clmr.models.CLMR` for `save_model`.

Randomness is keyed, not carried: the augmentation generator is re-seeded from (seed, rank, step)
at every step, and the global torch RNG (dropout) from (seed, rank, epoch) at every epoch start and
from (seed, rank, epoch, step) at every step, so a run resumed from any checkpoint, mid-epoch ones
included, replays the same draws as an uninterrupted run, whatever Lightning or the data loader
consumed from the global RNG in between.
"""

from __future__ import annotations

import json
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from clmr.config import Config
from clmr.errors import ClmrError
from clmr.losses import nt_xent
from clmr.models import CLMR, Head, Projector, SampleCNN
from clmr.train.metrics import label_loss, metric_name, probe_metric

_VALID_STREAM = 1  # keeps validation augmentation draws apart from training ones


class NonFiniteLossError(ClmrError):
    """The loss became NaN or infinite; training stops before another checkpoint is written."""


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers (seed, rank, step, ...); nearby tuples give unrelated seeds."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


class _Base(L.LightningModule):
    """What both objectives share: config, task, keyed RNG, finite-loss guard and probe bookkeeping."""

    def __init__(self, config: Config, n_classes: int | None, task: str | None, tags: list[str] | None):
        super().__init__()
        self.config = config
        self.task = task
        self.tags = list(tags) if tags is not None else None
        self.n_classes = n_classes
        self._valid_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(mix_seed(self.config.seed, self.global_rank, self.current_epoch))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(mix_seed(self.config.seed, self.global_rank, self.current_epoch, self.global_step))

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "stopped without writing a checkpoint: the last good one is kept. Try a lower --optim.lr "
                "or --precision 32-true."
            )

    def _collect_probe(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self._valid_outputs.append((logits.detach().float(), targets.detach()))

    def on_validation_epoch_end(self) -> None:
        if not self._valid_outputs:
            return
        logits = torch.cat([o[0] for o in self._valid_outputs])
        targets = torch.cat([o[1] for o in self._valid_outputs])
        self._valid_outputs.clear()
        if self.trainer.world_size > 1:
            logits = self.all_gather(logits).flatten(0, 1)
            targets = self.all_gather(targets).flatten(0, 1)
        value = probe_metric(logits, targets, self.task)
        self.log(f"valid/probe_{metric_name(self.task)}", value, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the exported model's clmr config (architecture, sample rate, crop, tags, task, training
        facts), the JSON that `save_model` writes, so that `clmr.load_model` reads a `.ckpt` of this run
        as it reads the run's model.safetensors (with torch.load(weights_only=True): JSON text only)."""
        from clmr.train.callbacks import ExportModel

        meta = next((cb.meta for cb in self.trainer.callbacks if isinstance(cb, ExportModel)), {})
        checkpoint["clmr_config"] = json.dumps(self.export(meta).config(), default=str)

    def export_meta(self) -> dict[str, Any]:
        """Training facts stored next to the exported weights."""
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("valid/")}
        return {
            "epoch": int(self.current_epoch),
            "step": int(self.global_step),
            "valid_loss": metrics.get("valid/loss"),
            "metrics": metrics,
            "preset": self.config.preset,
            "train_config": self.config.to_dict(),
        }


class ContrastiveModule(_Base):
    """SimCLR on raw audio: two views, `clmr.augment.Chain` on the device, SampleCNN -> projector -> NT-Xent.

    With `n_classes`, a linear probe on detached h (its own optimiser group, no gradient into the
    encoder) is trained alongside and its valid metric logged every epoch as a health signal.
    """

    def __init__(
        self,
        config: Config,
        n_classes: int | None = None,
        task: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        super().__init__(config, n_classes, task, tags)
        m = config.model
        self.encoder = SampleCNN(width=m.width, n_blocks=m.n_blocks)
        dim = self.encoder.out_dim
        self.projector = Projector(dim, m.projection_hidden or dim, m.projection_dim)
        self.augment: nn.Module | None = None
        if config.augment.enabled:
            from clmr.augment import Chain

            self.augment = Chain(sample_rate=config.sample_rate, **config.augment.chain_overrides())
        self.probe = nn.Linear(dim, n_classes) if (config.probe and n_classes and task) else None

    def _views(self, x_i: torch.Tensor, x_j: torch.Tensor, stream: int, index: int):
        """Augment both views on their device in float32 with a generator keyed by (seed, rank, stream, index)."""
        if self.augment is None:
            return x_i, x_j
        generator = torch.Generator(device=x_i.device)
        generator.manual_seed(mix_seed(self.config.seed, self.global_rank, stream, index))
        with torch.no_grad(), torch.autocast(device_type=x_i.device.type, enabled=False):
            return self.augment(x_i.float(), generator=generator), self.augment(
                x_j.float(), generator=generator
            )

    def _contrastive(self, x_i: torch.Tensor, x_j: torch.Tensor):
        h_i, h_j = self.encoder(x_i), self.encoder(x_j)
        loss = nt_xent(self.projector(h_i), self.projector(h_j), self.config.temperature)
        return loss, h_i, h_j

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x_i, x_j = self._views(batch[0], batch[1], 0, self.global_step)
        loss, h_i, h_j = self._contrastive(x_i, x_j)
        self._check_finite(loss)
        n = x_i.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        if self.probe is None:
            return loss
        targets = batch[2]
        logits = self.probe(torch.cat([h_i, h_j]).detach())
        probe_loss = label_loss(logits, torch.cat([targets, targets]), self.task)
        self.log("train/probe_loss", probe_loss, on_step=False, on_epoch=True, batch_size=n)
        return loss + probe_loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x_i, x_j = self._views(batch[0], batch[1], _VALID_STREAM, batch_idx)
        loss, _, _ = self._contrastive(x_i, x_j)
        self.log("valid/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=x_i.shape[0])
        if self.probe is not None:
            # the health signal: the probe on clean (un-augmented) crops
            self._collect_probe(self.probe(self.encoder(batch[0])), batch[2])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.config.optim
        groups = [
            {
                "params": [*self.encoder.parameters(), *self.projector.parameters()],
                "lr": o.lr,
                "weight_decay": o.weight_decay,
            }
        ]
        if self.probe is not None:
            groups.append({"params": list(self.probe.parameters()), "lr": o.probe_lr, "weight_decay": 0.0})
        return torch.optim.Adam(groups)

    def export(self, meta: dict[str, Any]) -> CLMR:
        """Encoder + projector as a CLMR model (sharing this module's weights)."""
        return CLMR(
            self.encoder,
            self.projector,
            sample_rate=self.config.sample_rate,
            meta={"objective": "contrastive", **self.export_meta(), **meta},
        )


class SupervisedModule(_Base):
    """The reference supervised baseline: SampleCNN(n_classes) with dropout 0.5 trained end to end on labels
    (BCE for tags, cross-entropy for classes). Exported as encoder + linear head named by the store's vocab."""

    def __init__(self, config: Config, n_classes: int, task: str, tags: list[str] | None = None) -> None:
        super().__init__(config, n_classes, task, tags)
        m = config.model
        self.encoder = SampleCNN(width=m.width, n_blocks=m.n_blocks, n_classes=n_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        loss = label_loss(self.encoder(x), y, self.task)
        self._check_finite(loss)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self.encoder(x)
        loss = label_loss(logits, y, self.task)
        self.log("valid/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self._collect_probe(logits, y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.config.optim
        return torch.optim.Adam(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)

    def export(self, meta: dict[str, Any]) -> CLMR:
        """The encoder without its `fc` (so `embed` gives h) plus `fc` as a linear head with tag names."""
        m = self.config.model
        encoder = SampleCNN(width=m.width, n_blocks=m.n_blocks)
        state = {k: v for k, v in self.encoder.state_dict().items() if not k.startswith("fc.")}
        encoder.load_state_dict(state)
        head = Head("linear", encoder.out_dim, self.n_classes)
        head.model[0].load_state_dict(self.encoder.fc.state_dict())
        return CLMR(
            encoder,
            head=head,
            sample_rate=self.config.sample_rate,
            tags=self.tags,
            task=self.task,
            meta={"objective": "supervised", **self.export_meta(), **meta},
        )
