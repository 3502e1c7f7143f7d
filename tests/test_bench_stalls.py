"""bench.stalls: a sleeping child process's late wake-ups, counted inside measurement windows."""

from __future__ import annotations

import os
import signal
import time

from bench.stalls import StallProbe


def test_a_stopped_machine_is_seen_as_one_stall_inside_the_window_and_none_outside():
    with StallProbe(tick_s=0.01, threshold_s=0.25) as probe:
        time.sleep(0.5)  # the child is sleeping in its loop
        quiet = (time.monotonic() - 0.3, time.monotonic())
        os.kill(probe.pid, signal.SIGSTOP)  # what a frozen machine does to it: it cannot run
        stopped_at = time.monotonic()
        time.sleep(0.8)
        os.kill(probe.pid, signal.SIGCONT)
        time.sleep(0.3)
        window = (stopped_at - 0.1, time.monotonic())
        stalled = probe.stalls([window])
        assert stalled.count == 1
        assert 0.6 < stalled.seconds < 1.2 and 0.6 < stalled.longest_s < 1.2
        assert probe.stalls([quiet]).count == 0
        half = probe.stalls([(stopped_at, stopped_at + 0.4)])  # only the part inside a window counts
        assert 0.3 < half.seconds <= 0.45
        assert stalled.as_json(window[1] - window[0])["share"] > 0.4
