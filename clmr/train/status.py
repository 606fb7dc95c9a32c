"""The training run's own figures on the progress display (`clmr.progress`): the epoch, the last loss
and the pairs/s of the steps, and the time left with the limit that ends the run."""

from __future__ import annotations

from clmr.progress import format_duration


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


def time_left_text(ending: tuple[float, str, list[str]] | None) -> str:
    """`27:31 left (max-time, before max-epochs)` for a time budget, `ETA 7:06 (max-epochs)` for a step
    or epoch limit at the current pace (`clmr.train.limits.Limits.ending`); empty when not known."""
    if ending is None:
        return ""
    seconds, first, others = ending
    left = f"{format_duration(seconds)} left" if first == "max-time" else f"ETA {format_duration(seconds)}"
    before = f", before {' and '.join(others)}" if others else ""
    return f"{left} ({first}{before})"
