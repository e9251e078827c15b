"""Progress: a terminal gets tqdm's live bar; a log file (stderr not a TTY) gets a few whole lines."""

from __future__ import annotations

import io

from edgeresnext.progress import EVERY_S, LogProgress, progress_bar


class Terminal(io.StringIO):
    """What a terminal looks like to a program: a stream whose isatty() is true."""

    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves: ``step`` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_log_gets_start_quarters_and_end_with_the_rate():
    log = io.StringIO()
    # 10,000 updates over ~100 s: tqdm would write thousands of refreshes.
    bar = LogProgress(
        None, desc="pytorch-fp32", total=10_000, unit="batch", unit_scale=False, file=log, clock=Clock(0.01)
    )
    for _ in range(10_000):
        bar.update(1)
        bar.set_postfix(loss="0.123")
    bar.close()
    bar.close()  # a second close writes nothing

    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0] == "pytorch-fp32: 0/10000 batch"
    assert [line.split(" (")[1].split(")")[0] for line in lines[1:-1]] == ["25 %", "50 %", "75 %"]
    assert lines[-1].startswith("pytorch-fp32: 10000/10000 batch in ")
    assert "batch/s, loss=0.123" in lines[-1]
    rate = float(lines[-1].split(", ")[1].split(" ")[0])
    assert 90 < rate < 110  # 10,000 updates, one clock reading each, 10 ms apart: ~100 s


def test_a_long_loop_without_a_total_writes_every_half_minute():
    log = io.StringIO()
    clock = Clock(1.0)
    with LogProgress(None, desc="download", total=None, unit="B", unit_scale=True, file=log, clock=clock) as bar:
        for _ in range(100):
            bar.update(2_000_000)
    lines = log.getvalue().splitlines()
    elapsed = clock.now
    assert len(lines) <= 2 + elapsed / EVERY_S
    assert len(lines) >= 3
    assert lines[1].startswith("download: ") and lines[1].endswith(" s")
    assert lines[-1].startswith("download: 200.0MB in ")


def test_a_slow_loop_gets_no_line_at_100_percent_before_its_end_line():
    log = io.StringIO()
    with LogProgress(
        None, desc="slow", total=4, unit="step", unit_scale=False, file=log, clock=Clock(EVERY_S + 1)
    ) as bar:
        for _ in range(4):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0].split(" in ")[0] for line in lines] == [
        "slow: 0/4 step",
        "slow: 1/4 step (25 %)",
        "slow: 2/4 step (50 %)",
        "slow: 3/4 step (75 %)",
        "slow: 4/4 step",
    ]


def test_progress_bar_iterates_everything_and_writes_a_handful_of_lines_to_a_file():
    log = io.StringIO()
    seen = list(progress_bar(range(5000), desc="images", unit="img", leave=False, file=log))
    assert seen == list(range(5000))
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 5
    assert lines[0] == "images: 0/5000 img" and lines[-1].startswith("images: 5000/5000 img in ")


def test_disabled_progress_writes_nothing_anywhere():
    for stream in (io.StringIO(), Terminal()):
        bar = progress_bar(total=10, desc="QAT", unit="step", disable=True, file=stream)
        for _ in range(10):
            bar.update(1)
            bar.set_postfix(epoch=1)
        bar.close()
        assert stream.getvalue() == ""


def test_a_terminal_gets_the_live_bar():
    terminal = Terminal()
    for _ in progress_bar(range(300), desc="pytorch-fp32", unit="batch", file=terminal):
        pass
    text = terminal.getvalue()
    assert "\r" in text  # redrawn in place, as tqdm does
    assert "pytorch-fp32" in text and "batch/s" in text and "300/300" in text
