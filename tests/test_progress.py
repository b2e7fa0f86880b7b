"""Progress in a redirected log is plain lines (no carriage returns or escape sequences); on a terminal, tqdm."""

import io

import pytest

import headlab.core.progress as progress
from headlab.core.progress import LogProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_redirected_log_gets_plain_lines(monkeypatch, capsys):
    clock = iter([0.0, 4.0, 12.0, 13.0, 30.0, 30.0])  # the start, four updates, the close
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = progress_bar(total=4, desc="detect", unit="probe")
    assert isinstance(bar, LogProgress)
    for _ in range(4):
        bar.update(1)  # at 4 s (too soon for a line), 12 s (a line), 13 s (too soon), 30 s (a line)
    bar.set_postfix(loss="0.5")
    bar.close()
    bar.close()  # a second close writes nothing
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines() == ["detect: 2/4 probe", "detect: 4/4 probe",
                                "detect: 4/4 probe (loss=0.5), done in 30.0 s"]


def test_iteration_and_disable(capsys):
    assert list(progress_bar(range(3), desc="eval")) == [0, 1, 2]
    assert capsys.readouterr().err.splitlines()[-1].startswith("eval: 3/3 it, done in ")
    bar = progress_bar(total=2, desc="quiet", disable=True)
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("tty", [True, False])
def test_a_terminal_gets_tqdm(monkeypatch, tty):
    monkeypatch.setattr(progress.sys, "stderr", Terminal() if tty else io.StringIO())
    bar = progress_bar(total=2, desc="x", dynamic_ncols=True)
    assert isinstance(bar, LogProgress) is not tty
    bar.close()


def test_a_with_block_closes_the_bar_even_when_its_work_fails(capsys):
    with pytest.raises(RuntimeError), LogProgress(total=3, desc="work", unit="step") as bar:
        bar.update(2)
        raise RuntimeError
    assert bar.closed and "work: 2/3 step, done in" in capsys.readouterr().err
