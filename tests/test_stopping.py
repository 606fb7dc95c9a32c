import math

import pytest

from clmr.errors import ClmrError
from clmr.train.stopping import EarlyStopping


def test_stops_after_patience_validations_without_improvement():
    rule = EarlyStopping(patience=2)
    assert rule.update(1.0, 0) and not rule.should_stop
    assert not rule.update(1.0, 1)  # equal is not better
    assert not rule.should_stop
    assert not rule.update(math.nan, 2)
    assert rule.should_stop and rule.best == 1.0 and rule.best_epoch == 0


def test_state_round_trips_and_a_better_loss_resets_the_count():
    rule = EarlyStopping(patience=3)
    rule.update(2.0, 0)
    rule.update(3.0, 1)
    again = EarlyStopping(patience=3)
    again.load_state_dict(rule.state_dict())
    assert again.stale == 1 and again.best == 2.0
    assert again.update(1.5, 2) and again.stale == 0 and again.best_epoch == 2


def test_patience_is_checked():
    with pytest.raises(ClmrError, match="patience"):
        EarlyStopping(patience=0)
