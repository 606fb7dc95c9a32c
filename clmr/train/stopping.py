"""Early stopping on a validation loss: the one rule shared by the supervised baseline, fine-tuning and
the probes (the reference's Lightning `EarlyStopping(monitor="Valid/loss", patience=N)`)."""

from __future__ import annotations

import math

from clmr.errors import check_whole


class EarlyStopping:
    """Counts validations without a lower loss; `should_stop` once `patience` of them in a row.

    `update(loss)` returns True when `loss` is the best so far (strictly lower). A NaN loss never
    improves. Its state is plain numbers (`state_dict` / `load_state_dict`), so a resumed run goes on
    counting where it stopped.
    """

    def __init__(self, patience: int) -> None:
        check_whole("patience", patience, least=1)
        self.patience = patience
        self.best = math.inf
        self.best_epoch = -1
        self.stale = 0

    def update(self, loss: float, epoch: int) -> bool:
        """Record the validation loss of `epoch`; True if it is the best so far."""
        if loss < self.best:
            self.best, self.best_epoch, self.stale = float(loss), int(epoch), 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def state_dict(self) -> dict[str, float | int]:
        return {"best": self.best, "best_epoch": self.best_epoch, "stale": self.stale}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best, self.best_epoch, self.stale = (
            float(state["best"]),
            int(state["best_epoch"]),
            int(state["stale"]),
        )
