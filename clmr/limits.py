"""The bounds clmr accepts for its numbers, stated once (config keys, model files, stores, flags)."""

MAX_SAMPLE_RATE = 384_000  # Hz; higher rates reach resamplers (soxr) with sizes they cannot handle
MAX_WIDTH = 8.0  # SampleCNN channel scale: its widest layer then has 4,096 channels (~150 M parameters)
MAX_DIM = 8192  # projector / head feature sizes: one 8192 x 8192 layer is 256 MiB of float32
AUGMENT_SCRATCH_MB = 1024.0  # default bound on one augmentation step call's scratch memory (MB)
MAX_CLASSES = 100_000  # head outputs (tag vocabularies are tens to a few thousand)
MAX_WORKERS = 256  # decode processes of one job; each holds a decoder and its read-ahead (~30 MB)
MAX_PIECE_SAMPLES = 2**24  # one generated piece (`clmr generate`): 12.7 min at 22,050 Hz, ~1 GiB rendered
MAX_TRACKS = 1_000_000  # pieces in one generated set (its CSVs and split lists are built in memory)
