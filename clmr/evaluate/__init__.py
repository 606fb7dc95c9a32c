"""Evaluation of learned representations: cached song-level features, probes (linear, MLP, MARBLE,
k-NN), label fractions, metrics, end-to-end fine-tuning, and reports (JSON, Markdown, plots)."""

from clmr.evaluate.finetune import finetune
from clmr.evaluate.metrics import classification_metrics, tagging_metrics
from clmr.evaluate.probe import Recipe
from clmr.evaluate.run import evaluate
from clmr.evaluate.selection import select_fraction

__all__ = ["Recipe", "classification_metrics", "evaluate", "finetune", "select_fraction", "tagging_metrics"]
