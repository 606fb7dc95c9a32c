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
    assert all(line.endswith("x real-time") for line in lines)


def test_an_early_stop_is_reported_and_resumed_counts_start_where_they_were(capsys):
    with progress_bar("fine-tuning", 200, completed=10, unit="epochs") as advance:
        advance()
        advance(2)
    assert capsys.readouterr().err == "fine-tuning: 13/200 epochs\n"  # one line: where it stopped


def test_disabled_prints_nothing(capsys):
    with progress_bar("preprocess", 2, enabled=False, audio=True) as advance:
        advance(1, 5.0)
        advance()
    assert capsys.readouterr() == ("", "")
