"""Stopping a long command (cv, tune, distill, serve) on the signals that end one: Ctrl-C (SIGINT), a closed
terminal (SIGHUP), `timeout`, `kill`, a batch scheduler or `ray job stop` (SIGTERM), Slurm's warning (SIGUSR1).

The first signal raises Stopped in the main thread, wherever it waits; the drivers then ask their folds to stop
after their current training step and wait a little for them (runner), and the command ends with one line,
STOPPED_LINE, and the shell's status for a signal, 128 + its number (130 for SIGINT, 143 for SIGTERM, 129 for
SIGHUP, 138 for SIGUSR1). Inside `deferred()` (writing a run's outputs) the stop waits for the block's end: nothing half-written.
A second signal while the folds are being stopped ends the wait at once.

Ray's own handlers are not used: ray.init sets a SIGTERM handler that exits with status 15, and Ray Tune's SIGINT
and SIGUSR1 handlers end the trials as finished, save Tune's (pickled) state and print how to restore it through
Tune, which this project never does: a run or search continues when the same command runs again (install() again
after ray.init and once a search's Tune loop runs; runner sets TUNE_DISABLE_SIGINT_HANDLER).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from concurrent.futures import Future

STOPPED_LINE = "stopped; run the same command to continue"
# SIGUSR1: what Slurm sends ahead of a job's time limit when asked to (sbatch --signal=USR1@60)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, as Ctrl-C raises: code that handles errors lets it through; Ray's
    own waits (ray.get) raise a plain KeyboardInterrupt in its place (status() says which signal it was)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def status(self) -> int:
        """The exit status a shell gives a command ended by this signal: 128 + its number."""
        return 128 + self.signum


_state = {"installed": False, "signum": None, "deferred": 0, "pending": False, "said": False}


def install() -> None:
    """Stopped on SIGINT, SIGTERM and SIGHUP from now on (again after ray.init, which sets its own SIGTERM handler).
    Only the main thread can set handlers: elsewhere (a driver run inside a search's trial) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return
    if not _state["installed"]:
        _state.update(signum=None, pending=False, said=False)
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    _state["installed"] = True


def reinstall() -> None:
    """install() again if this process installed it (after something else took the signals: ray.init)."""
    if _state["installed"]:
        install()


def uninstall() -> None:
    """The signals' default handlers back (a command that ran in a process that goes on: tests, notebooks)."""
    if threading.current_thread() is threading.main_thread() and _state["installed"]:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in SIGNALS[1:]:
            signal.signal(sig, signal.SIG_DFL)
    _state.update(installed=False, signum=None, pending=False, said=False)


def requested() -> int | None:
    """The number of the first stop signal that arrived, if any."""
    return _state["signum"]


def say(early: bool = False) -> None:
    """Prints STOPPED_LINE on stderr, once, as the command's last line (after Ray's own notices). early: a driver
    starting to stop its folds, which prints it then only inside a submitted Ray job, where `ray job stop` sends
    SIGKILL 3 seconds after its SIGTERM (RAY_JOB_STOP_WAIT_TIME_S) and the end might never come."""
    import os
    import sys

    if _state.get("said") or (early and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ):
        return
    _state["said"] = True
    print(f"reuters-ray: {STOPPED_LINE}", file=sys.stderr, flush=True)


def status() -> int:
    """The exit status of a command a stop ended: 128 + the first stop signal's number (130 for Ctrl-C, also when
    the KeyboardInterrupt came from Python's own handler). Ray's waits (ray.get) raise their own KeyboardInterrupt
    in place of Stopped, so a driver catches KeyboardInterrupt and asks here which signal it was."""
    return 128 + (_state["signum"] or signal.SIGINT)


def _handler(signum: int, frame) -> None:
    first = _state["signum"] is None
    _state["signum"] = _state["signum"] or signum
    if _state["deferred"]:
        _state["pending"] = _state["pending"] or first
        return
    raise Stopped(_state["signum"])


@contextlib.contextmanager
def deferred():
    """A block a stop does not cut: a signal that arrives inside it is raised as Stopped once the block ends."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
    if not _state["deferred"] and _state["pending"]:
        _state["pending"] = False
        raise Stopped(_state["signum"])


def in_thread(name: str, fn, *args) -> Future:
    """fn(*args) in a daemon thread, its result (or exception) in the Future returned: a stopped command exits at
    once, where a pool's threads would be waited for at the interpreter's exit (a fold's fit to its end)."""
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 (handed to whoever waits on the future)
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
