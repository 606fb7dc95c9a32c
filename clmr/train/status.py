"""The training run's own figures on the progress display (`clmr.progress`): the epoch, the last loss
and the pairs/s of the steps."""

from __future__ import annotations


def status_line(epoch: int, max_epochs: int, loss: float | None, run_totals: dict[str, float]) -> str:
    """`epoch 3/10, loss 3.4012, 282.1 pairs/s`: `epoch` counted from 0 (shown from 1), `max_epochs`
    -1 for no limit, `run_totals` the engine's step time and pair counts of this invocation."""
    of = f"/{max_epochs}" if max_epochs != -1 else ""
    r = run_totals
    rate = r["items"] / (r["wait"] + r["busy"]) if r["items"] else None
    return ", ".join(
        [f"epoch {epoch + 1}{of}"]
        + ([f"loss {loss:.4f}"] if loss is not None else [])
        + ([f"{rate:.1f} pairs/s"] if rate is not None else [])
    )
