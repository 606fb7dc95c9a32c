"""The shared progress display: plain lines in a log file, nothing when off, where it stopped on exit."""

from clmr import progress
from clmr.progress import progress_bar


def test_plain_lines_show_counts_and_speed(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    with progress_bar("embedding", 3, unit="tracks", audio=True) as advance:
        for _ in range(3):
            advance(1, 30.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("embedding: 1/3 tracks, 0.01 h of audio, ")
    assert lines[-1].startswith("embedding: 3/3 tracks, 0.03 h of audio, ")
    assert all("x real-time" in line for line in lines) and "ETA" not in lines[-1]  # done: no ETA


def test_an_early_stop_is_reported_and_resumed_counts_start_where_they_were(capsys):
    with progress_bar("fine-tuning", 200, completed=10, unit="epochs") as advance:
        advance()
        advance(2)
    err = capsys.readouterr().err
    assert err.startswith("fine-tuning: 13/200 epochs, ETA ") and err.count("\n") == 1  # where it stopped


def test_disabled_prints_nothing(capsys):
    with progress_bar("preprocess", 2, enabled=False, audio=True) as advance:
        advance(1, 5.0)
        advance()
    assert capsys.readouterr() == ("", "")


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_every_30_s_with_an_eta_from_this_invocations_rate(capsys):
    clock = FakeClock()
    status = iter(f"step {i}" for i in range(100))
    with progress_bar(
        "pretrain", 100, completed=40, unit="steps", status=lambda: next(status), clock=clock
    ) as advance:
        for _ in range(12):  # a step every 10 s: a line at 30 s, 60 s, 90 s and 120 s
            clock.now += 10.0
            advance()
    lines = capsys.readouterr().err.splitlines()
    # 3 steps in 30 s of this invocation (the 40 resumed ones do not count): 57 left take 570 s
    assert lines[0] == "pretrain: 43/100 steps, step 0, ETA 9:30"
    assert [line.split(",")[0] for line in lines] == [f"pretrain: {n}/100 steps" for n in (43, 46, 49, 52)]
    assert lines[-1].endswith("ETA 8:00")  # 48 left at 1 step per 10 s


def test_eta_formats_hours_and_an_open_total_has_none(capsys):
    assert progress.format_duration(3725.4) == "1:02:05" and progress.format_duration(59.6) == "1:00"
    clock = FakeClock()
    with progress_bar("pretrain", None, unit="steps", clock=clock) as advance:
        clock.now += 31.0
        advance()
    assert capsys.readouterr().err == "pretrain: 1 steps\n"


def test_the_terminal_bar_prints_names_with_markup_literally(capsys, monkeypatch):
    """A label or status holding rich markup ("[/]", "[bold]") is text, not a MarkupError."""
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    with progress_bar("[/]song [bold].wav", 2, status=lambda: "[/]") as advance:
        advance(2)
    assert "[/]song [bold].wav" in capsys.readouterr().err


def test_the_callers_time_left_replaces_the_eta_in_both_modes(capsys, monkeypatch):
    """A time budget's time left (the training engine's) is shown in plain lines and on the terminal bar,
    also with no total (a run with --max-time and no epoch limit)."""
    clock = FakeClock()
    left = iter(f"{29 - i}:00 left (max-time)" for i in range(10))
    with progress_bar(
        "pretrain", None, unit="steps", status=lambda: "epoch 3", remaining=lambda: next(left), clock=clock
    ) as advance:
        clock.now += 31.0
        advance()
    assert capsys.readouterr().err == "pretrain: 1 steps, epoch 3, 29:00 left (max-time)\n"
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    with progress_bar(
        "pretrain", None, remaining=lambda: "27:31 left (max-time, before max-epochs)"
    ) as advance:
        advance()
    assert "27:31 left (max-time, before max-epochs)" in capsys.readouterr().err
