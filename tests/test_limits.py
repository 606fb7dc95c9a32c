"""The stop rules and the time left on the progress display: a --max-time budget carried over resumes,
and which limit ends the run first (clmr.train.limits, clmr.train.status)."""

from types import SimpleNamespace

import pytest

from clmr.config import load_config
from clmr.train import limits as limits_module
from clmr.train.limits import Limits
from clmr.train.status import time_left_text


@pytest.fixture
def clock(monkeypatch):
    """The engine's clock, moved by the test: `clock[0] += seconds`."""
    now = [1000.0]
    monkeypatch.setattr(limits_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def limits(preset="cpu", spent=0.0, step=0, **trainer) -> Limits:
    config = load_config(preset, overrides={f"trainer.{k}": v for k, v in trainer.items()})
    return Limits(config.trainer, SimpleNamespace(world_size=1), spent, step)


def state(step, epoch, batch=0):
    return {"step": step, "epoch": epoch, "batch": batch}


def test_a_resumed_budget_counts_the_time_spent_before(clock):
    """The cpu preset (30 minutes, no epoch limit), resumed after 10 minutes: 20 minutes are left."""
    run = limits("cpu", spent=600.0, step=100)
    assert time_left_text(run.ending(state(100, 50), n_batches=2)) == "20:00 left (max-time)"
    clock[0] += 60.0
    assert run.spent() == 660.0 and run.time_left() == 1140.0
    assert time_left_text(run.ending(state(150, 75), n_batches=2)) == "19:00 left (max-time)"
    assert not run.reached(150)
    clock[0] += 1140.0
    assert run.reached(151) and run.time_left() == 0.0
    assert run.stop_reason(state(151, 75)) == "--max-time 00:00:30:00 (30:00 spent)"


def test_the_limit_that_ends_the_run_first_is_named(clock):
    run = limits("cpu", max_epochs=10, max_steps=1000)
    assert time_left_text(run.ending(state(0, 0), n_batches=4)) == "30:00 left (max-time)"  # no pace yet
    clock[0] += 90.0  # 9 steps in 90 s: 0.1 steps/s; the epochs end in 31 steps, the steps in 991
    ending = run.ending(state(9, 2, batch=1), n_batches=4)
    assert ending == (310.0, "max-epochs", ["max-time", "max-steps"])
    assert time_left_text(ending) == "ETA 5:10 (max-epochs, before max-time and max-steps)"
    slow = limits("cpu", max_steps=1000)
    clock[0] += 90.0
    assert time_left_text(slow.ending(state(9, 2), 4)) == "28:30 left (max-time, before max-steps)"


def test_without_a_time_budget_the_eta_waits_for_a_pace(clock):
    run = limits("tiny", step=40)  # 120 epochs
    assert run.ending(state(40, 10), 4) is None and time_left_text(None) == ""
    clock[0] += 20.0  # 10 steps in 20 s; (120 - 12) * 4 - 2 = 430 steps left take 860 s
    assert time_left_text(run.ending(state(50, 12, batch=2), 4)) == "ETA 14:20 (max-epochs)"
