"""clmr: Contrastive Learning of Musical Representations (Spijkervet & Burgoyne, ISMIR 2021)."""

__version__ = "0.1.0"

from clmr.models import CLMR, SampleCNN, load_model, save_model  # noqa: E402

__all__ = ["CLMR", "SampleCNN", "__version__", "load_model", "save_model"]
