"""clusterctl.interrupts: signals as an exception, held back during a step."""

from __future__ import annotations

import os
import signal

import pytest

from clusterctl.interrupts import Interrupted, Interruptions


def test_a_signal_raises_interrupted_with_the_shell_s_exit_status():
    with pytest.raises(Interrupted) as caught, Interruptions():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # let the handler run
    assert caught.value.exit_status == 143
    assert str(caught.value) == "interrupted by SIGTERM"


def test_a_signal_during_a_held_step_comes_after_it():
    done = []
    interruptions = Interruptions()
    with pytest.raises(Interrupted) as caught, interruptions, interruptions.held():
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the whole step")
    assert done == ["the whole step"]
    assert caught.value.signum == signal.SIGHUP  # the first one that came


def test_handlers_are_restored_and_an_ignored_signal_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with Interruptions():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)
