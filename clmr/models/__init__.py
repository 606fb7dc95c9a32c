"""Encoder, projector, heads, the CLMR module and checkpoint I/O."""

from clmr.models.checkpoint import CheckpointError, load_model, model_summary, read_config, save_model
from clmr.models.clmr import CLMR
from clmr.models.heads import HEAD_KINDS, Head, Projector
from clmr.models.samplecnn import SampleCNN

__all__ = [
    "CLMR",
    "HEAD_KINDS",
    "CheckpointError",
    "Head",
    "Projector",
    "SampleCNN",
    "load_model",
    "model_summary",
    "read_config",
    "save_model",
]
