"""SIGINT and SIGTERM: turned into an `Interrupted` exception, raised at once outside a write and only at a
safe point inside one (a `deferred()` block: a checkpoint or file write, the training loop between batches)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from imgclass_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED

EXIT_CODES = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM; a KeyboardInterrupt, so the cleanup code written for Ctrl-C runs for both."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(NAMES.get(signum, str(signum)))
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, EXIT_INTERRUPTED)
        self.signal_name = NAMES.get(signum, str(signum))


def exit_code(e: BaseException) -> int:
    return getattr(e, "exit_code", EXIT_INTERRUPTED)


def signal_name(e: BaseException) -> str:
    return getattr(e, "signal_name", "SIGINT")


_state = {"depth": 0, "pending": None}


def _handler(signum, frame):
    if _state["depth"] > 0:
        _state["pending"] = _state["pending"] or signum  # the first signal decides the exit code
        return
    raise Interrupted(signum)


def pending() -> bool:
    return _state["pending"] is not None


def check() -> None:
    """A safe point: raise the signal that arrived during the deferred block, if any."""
    signum = _state["pending"]
    if signum is not None:
        _state["pending"] = None
        raise Interrupted(signum)


@contextmanager
def deferred():
    """Inside: a signal only sets a flag. Leaving the outermost block (normally) raises it; nested blocks (a file
    write inside the training loop) leave it to the loop's next safe point."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if _state["depth"] == 0:
        check()


@contextmanager
def handled():
    """Install the handlers for one command (main thread only) and restore the previous ones afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in EXIT_CODES}
    _state["pending"] = None
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state["pending"] = None
        _state["depth"] = 0
