"""Progress output: plain lines every few rounds when the stream is not a terminal (log files), a bar on one."""

import io

from fedshield.sim.progress import RoundProgress


def _row(t):
    return {"round": t, "ma": 0.5 + t / 100, "ba": 0.25, "accepted": 9, "selected": 10}


def test_not_a_terminal_prints_about_ten_plain_lines():
    out = io.StringIO()
    p = RoundProgress("exp", total=25, stream=out)
    for t in range(1, 26):
        p.update(_row(t))
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # every ceil(25 / 10) = 3 rounds, and the last one
    assert [ln.split()[2] for ln in lines] == [f"{t}/25" for t in (3, 6, 9, 12, 15, 18, 21, 24, 25)]
    assert lines[-1].startswith("exp: round 25/25  MA 0.750 BA 0.250  accepted 9/10")


def test_resumed_run_counts_from_its_first_round_and_skips_unevaluated_metrics():
    out = io.StringIO()
    p = RoundProgress("exp", total=4, first=3, stream=out, every=1)
    p.update({"round": 3, "ma": float("nan"), "ba": float("nan"), "accepted": 1, "selected": 2})
    p.update(_row(4))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("exp: round 3/4  accepted 1/2") and "MA" not in lines[0]
    assert lines[1].startswith("exp: round 4/4  MA 0.540")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_bar():
    out = _Terminal()
    p = RoundProgress("exp", total=3, stream=out)
    for t in range(1, 4):
        p.update(_row(t))
    p.close()
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()
