"""Label losses and the probe metric shared by the online probe and the supervised baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_loss(logits: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    """BCE-with-logits for multi-label tags (float multi-hot), cross-entropy for classes (int64)."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    return F.cross_entropy(logits.float(), targets.long())


def metric_name(task: str) -> str:
    """The probe metric logged for a task: macro ROC-AUC for tags, accuracy for classes."""
    return "roc_auc" if task == "multilabel" else "accuracy"


def probe_metric(logits: torch.Tensor, targets: torch.Tensor, task: str) -> float:
    """Macro ROC-AUC over the tags that have both positives and negatives, or accuracy; NaN if undefined."""
    if task != "multilabel":
        return float((logits.argmax(dim=1) == targets).float().mean()) if len(targets) else float("nan")
    from sklearn.metrics import roc_auc_score

    y = targets.detach().cpu().numpy() > 0.5
    scores = logits.detach().float().cpu().numpy()
    usable = y.any(axis=0) & ~y.all(axis=0)
    if not usable.any():
        return float("nan")
    return float(roc_auc_score(y[:, usable], scores[:, usable], average="macro"))
