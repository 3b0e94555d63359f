"""Progress (kjcore/progress.py): bars only where someone sees them, the cold-start notice."""
import io

import pytest

import kjcore
from kjcore import progress
from kjcore.cpu import warmup
from kjcore.fuzz import jump_campaign
from kjcore.store import open_machine, save_machine


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_wanted_follows_the_caller_then_the_environment_then_the_terminal(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert not progress.wanted(stream=io.StringIO())
    assert progress.wanted(stream=_Terminal())
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.wanted(stream=_Terminal()) and progress.wanted(True)
    monkeypatch.setenv(progress.ENV, "1")
    assert progress.wanted(stream=io.StringIO()) and not progress.wanted(False)


def test_campaign_bar_when_asked_and_silence_by_default(capsys):
    jump_campaign(40, seed=1, units=2)
    assert capsys.readouterr().err == ""
    jump_campaign(40, seed=1, units=2, progress=True)
    err = capsys.readouterr().err
    assert "jump campaign: 100%" in err and "2/2" in err and "round trips, 0 failing" in err


def test_large_saves_and_verifying_opens_show_a_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    m = kjcore.Machine(ram_size=4 << 20, kernel_reserved=1 << 20)
    save_machine(m, tmp_path / "a")
    assert capsys.readouterr().err == ""                # not a terminal: no bar
    monkeypatch.setenv(progress.ENV, "1")
    save_machine(m, tmp_path / "b")
    assert capsys.readouterr().err == ""                # asked, but too small to watch
    monkeypatch.setattr(progress, "LARGE_RAM", 1 << 20)
    save_machine(m, tmp_path / "c")
    assert "save RAM: 100%" in capsys.readouterr().err
    open_machine(tmp_path / "c", verify=True)
    assert "verify RAM: 100%" in capsys.readouterr().err


@pytest.mark.parametrize("helper, seconds", [("0", 30), ("1", 20)])
def test_cold_start_says_it_compiles(monkeypatch, capsys, helper, seconds):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(warmup, "_warm", False)
    monkeypatch.setattr(warmup, "_helper", None)
    monkeypatch.setattr(warmup, "_cached", lambda disp: False)   # as with an empty cache
    monkeypatch.setattr(warmup.subprocess, "Popen", _no_helper)
    monkeypatch.setenv("KJCORE_COMPILE_HELPER", helper)
    warmup.start()
    assert capsys.readouterr().err == (f"kjcore: compiling the CPU once (about {seconds} s on "
                                       f"2 cores; cached for later runs)\n")
    monkeypatch.setenv(progress.ENV, "0")
    warmup.start()
    assert capsys.readouterr().err == ""


def _no_helper(*args, **kw):
    raise OSError("no helper in this test")
