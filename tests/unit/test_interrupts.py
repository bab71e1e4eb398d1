"""clusterctl.interrupts: signals as an exception, held back during a step."""

from __future__ import annotations

import os
import signal

import pytest

from clusterctl.interrupts import SIGNALS, Interrupted, Interruptions, ignore_from_now


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


def test_once_settled_a_signal_is_ignored_and_the_handlers_come_back_after():
    with Interruptions() as interruptions:
        interruptions.settle()
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # let the handler run: nothing is raised
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a caller in-process is intact


def test_after_a_finished_command_a_signal_leaves_its_exit_status():
    before = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        ignore_from_now()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        signal.sigtimedwait([], 0)  # this process is still here
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
