"""Using a trained model: embed and tag audio (arrays, files, catalogues), find similar songs, export."""

from clmr.inference.api import embed_audio, embed_file, embed_files, tag_file, tag_files, top_tags
from clmr.inference.engine import TrackOutput

__all__ = ["TrackOutput", "embed_audio", "embed_file", "embed_files", "tag_file", "tag_files", "top_tags"]
