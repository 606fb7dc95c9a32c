"""The named settings applied on top of the config's defaults: the objective's recipes (the supervised
baseline, fine-tuning) and the presets (`--preset NAME`). Plain data, resolved by `clmr.config.load_config`."""

from __future__ import annotations

from typing import Any

# The supervised baseline's recipe, under any preset (the reference's clmr/modules/supervised_learning.py
# `configure_optimizers` and main.py's EarlyStopping): SGD, ReduceLROnPlateau, patience 20.
SUPERVISED = {
    "optim": {"optimizer": "sgd", "weight_decay": 1e-6, "plateau_factor": 0.2},
    "trainer": {"early_stopping_patience": 20},
}

# Fine-tuning a pre-trained encoder with a new head (`clmr finetune`): the reference's linear-evaluation
# settings (linear_evaluation.py: Adam lr 1e-3, weight decay 1e-6, ReduceLROnPlateau(0.1, 5), early
# stopping patience 10, up to 200 epochs); one checkpoint, no periodic copies, no online probe.
FINETUNE = {
    "probe": False,
    "augment": {"enabled": False},
    "optim": {"lr": 1e-3, "weight_decay": 1e-6, "plateau_factor": 0.1},
    "trainer": {
        "devices": 1,
        "max_epochs": 200,
        "early_stopping_patience": 10,
        "num_workers": 0,
        "checkpoint_every": None,
    },
}

# A small SampleCNN at 8 kHz (crops of 3^8 = 6,561 samples, 0.82 s) that learns in minutes on a CPU.
# Pitch shift and reverb are off: on a CPU they cost 2/3 of the step, and in a few hundred steps the
# full chain does not beat a random encoder's probe while the lighter one does (docs/training.md).
TINY: dict[str, Any] = {
    "sample_rate": 8000,
    "batch_size": 32,
    "model": {"width": 0.25, "n_blocks": 7, "projection_dim": 64},
    "augment": {"pitch": 0.0, "reverb": 0.0},
    "optim": {"lr": 1e-3},
    "trainer": {"max_epochs": 120, "num_workers": 0, "checkpoint_every": 20, "log_every_n_steps": 20},
}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting: every default of clmr.config.
    "paper": {},
    "tiny": TINY,
    # `tiny` without the augmentation chain (the two crops of a track are the only views), trained for 30
    # minutes: on real music on 2 CPU cores this wins that budget on the mean of labels and degraded
    # queries (3 seeds; tiny's chain loses 10 points of query top-1; docs/realmusic.md has the ablation).
    "cpu": {
        **TINY,
        "augment": {"enabled": False},
        "trainer": {
            "max_epochs": -1,
            "max_time": "00:00:30:00",
            "val_every": "1min",
            "save_every": "1min",
            "num_workers": 0,
            "checkpoint_every": None,
        },
    },
}
