"""The `clmr` command line: every planned sub-command is listed and has a help page."""

import subprocess
import sys

import pytest

from clmr.cli import COMMANDS, build_parser, main


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "clmr", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in (
        "demo",
        "generate",
        "download",
        "preprocess",
        "pretrain",
        "evaluate",
        "finetune",
        "embed",
        "tag",
        "similar",
        "export",
        "convert",
        "info",
    ):
        assert name in COMMANDS and name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert name in capsys.readouterr().out


def test_help_does_not_import_torch_or_sklearn():
    """Every command's parser is built for `clmr --help`: heavy imports must wait for `run`."""
    code = (
        "import sys; from clmr.cli import build_parser; build_parser(); "
        "heavy = sorted(m for m in ('torch', 'sklearn', 'lightning') if m in sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    assert build_parser().prog == "clmr"


def test_abbreviated_or_misspelt_options_are_refused_with_suggestions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "pretrain",
                "--data",
                "s",
                "--out",
                "r",
                "--temp",
                "0.1",
                "--augment.pit",
                "0",
                "--bach-size",
                "8",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.splitlines()[0].startswith("usage: clmr pretrain")
    assert "--temp: did you mean --temperature?" in err
    assert "--augment.pit: did you mean --augment.pitch?" in err
    assert "--bach-size: did you mean --batch-size?" in err
