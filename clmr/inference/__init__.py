"""Using a trained model: embed and tag audio (arrays, files, catalogues), find similar songs, export.

The song-level functions live in `clmr.songs` (one path shared with evaluation and the HEAR API) and
are re-exported here."""

from clmr.songs import TrackOutput, embed_audio, embed_file, embed_files, tag_file, tag_files, top_tags

__all__ = ["TrackOutput", "embed_audio", "embed_file", "embed_files", "tag_file", "tag_files", "top_tags"]
