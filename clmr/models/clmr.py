"""The CLMR model: encoder f, optional projector g, optional classification head, and metadata."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import clmr.models.checks as checks
from clmr.models.heads import Head, Projector
from clmr.models.samplecnn import SampleCNN

TASKS = ("multilabel", "multiclass")


def split_classifier(encoder: SampleCNN) -> tuple[SampleCNN, Head]:
    """A supervised SampleCNN (with `fc`) as a feature encoder (h before `fc`) plus `fc` as a linear head.

    The weights are copied; in eval mode `head(features(x))` equals `encoder(x)` (dropout is identity).
    """
    features = SampleCNN(width=encoder.width, n_blocks=encoder.n_blocks)
    features.load_state_dict({k: v for k, v in encoder.state_dict().items() if not k.startswith("fc.")})
    head = Head("linear", features.out_dim, int(encoder.fc.out_features))
    head.model[0].load_state_dict(encoder.fc.state_dict())
    features.train(encoder.training)
    head.train(encoder.training)
    return features, head


class CLMR(nn.Module):
    """Encoder + optional projector + optional head, with the metadata that travels with the weights.

    `embed(x)` gives the representation h used downstream; `project(h)` the contrastive z;
    `classify(x)` head logits. A supervised SampleCNN (with `fc`) given without a head is split: `fc`
    becomes a linear head, so that `embed` always gives h. Tag names, sample rate and crop length are
    kept so that a saved model can be used on new audio without reconstructing anything by hand. Songs,
    files and devices are the layer above (`clmr.embed_file(model, path)`, `clmr.tag_file`, `clmr.songs`).
    """

    def __init__(
        self,
        encoder: SampleCNN,
        projector: Projector | None = None,
        head: Head | None = None,
        *,
        sample_rate: int = 22050,
        tags: list[str] | None = None,
        task: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        sample_rate = checks.sample_rate(sample_rate)
        if task is not None and (not isinstance(task, str) or task not in TASKS):
            raise checks.ModelConfigError("task", f"must be one of {', '.join(TASKS)} or null, got {task!r}")
        if meta is not None and not isinstance(meta, dict):
            raise checks.ModelConfigError("meta", f"must be a JSON object, got {type(meta).__name__}")
        for part, name in ((projector, "projector.in_dim"), (head, "head.in_dim")):
            in_dim = part.dims[0] if isinstance(part, Projector) else getattr(part, "in_dim", None)
            if part is not None and in_dim != encoder.out_dim:
                raise checks.ModelConfigError(
                    name, f"is {in_dim}, but the encoder gives {encoder.out_dim}-d features"
                )
        super().__init__()
        if getattr(encoder, "n_classes", None) and head is None:
            encoder, head = split_classifier(encoder)
        self.tags = checks.tags(tags, head.n_classes if head is not None else None)
        self.encoder = encoder
        self.projector = projector
        self.head = head
        self.sample_rate = sample_rate
        self.task = task
        self.meta = dict(meta or {})

    @property
    def crop_length(self) -> int:
        """Samples per crop the encoder takes."""
        return self.encoder.input_length

    @property
    def embedding_dim(self) -> int:
        """Size of h."""
        return self.encoder.out_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Crops (B, crop_length) -> representations h (B, embedding_dim)."""
        return self.encoder(x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Representations h -> contrastive projections z."""
        if self.projector is None:
            raise ValueError("this model has no projector")
        return self.projector(h)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Crops -> head logits (apply sigmoid for tags, softmax for classes)."""
        if self.head is None:
            raise ValueError("this model has no classification head; load one with head=...")
        return self.head(self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `embed`."""
        return self.embed(x)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model, as stored in the checkpoint's JSON."""
        return {
            "format": "clmr",
            "version": 1,
            "encoder": self.encoder.architecture(),
            "projector": list(self.projector.dims) if self.projector is not None else None,
            "head": self.head.architecture() if self.head is not None else None,
            "sample_rate": self.sample_rate,
            "crop_length": self.crop_length,
            "embedding_dim": self.embedding_dim,
            "tags": self.tags,
            "task": self.task,
            "meta": self.meta,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CLMR:
        """Build an (untrained) model from `config()` output."""
        enc = checks.json_object(checks.required(config, "encoder"), "encoder")
        with checks.within("encoder"):
            width, n_blocks = checks.required(enc, "width"), checks.required(enc, "n_blocks")
            encoder = SampleCNN(width=width, n_blocks=n_blocks, n_classes=enc.get("n_classes"))
        with checks.within("projector"):
            dims = config.get("projector")
            if dims is not None and (not isinstance(dims, list) or len(dims) != 3):
                raise checks.ModelConfigError(
                    "", f"must be null or 3 sizes [in, hidden, out], got {checks.show(dims)}"
                )
            projector = Projector(*dims) if dims else None
        with checks.within("head"):
            head_cfg = checks.json_object(config.get("head"), optional=True)
            head = None
            if head_cfg:
                kind, in_dim = checks.required(head_cfg, "kind"), checks.required(head_cfg, "in_dim")
                n_classes = checks.required(head_cfg, "n_classes")
                head = Head(kind, in_dim, n_classes, head_cfg.get("hidden", 512))
        return cls(
            encoder,
            projector,
            head,
            sample_rate=checks.required(config, "sample_rate"),
            tags=config.get("tags"),
            task=config.get("task"),
            meta=config.get("meta"),
        )
