"""Ctrl-C and SIGTERM during training: finish the step, save, say where, exit non-zero; twice: stop now."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from data.errors import LoraSmithError

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # the shell's 128 + signal number


class TrainingInterrupted(LoraSmithError):
    """The user stopped the run; the LoRA and the state were saved. `exit_code` is 130 (SIGINT) or 143."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class StopRequest:
    """Set by the first SIGINT/SIGTERM; the loop looks at it after every optimizer step."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def graceful_stop(enabled: bool = True) -> Iterator[StopRequest]:
    """Within this block the first SIGINT/SIGTERM only sets the request; a second one stops at once.

    Only the main thread of the main process can install handlers; elsewhere (`enabled=False`) the request
    simply never comes and the default behaviour stays.
    """
    request = StopRequest()
    if not enabled:
        yield request
        return

    def first(signum, frame) -> None:
        request.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing this step, then saving the LoRA and the state "
            "(press Ctrl-C again to stop at once, without saving)",
            file=sys.stderr,
            flush=True,
        )
        for sig in EXIT_CODES:
            signal.signal(sig, second)

    def second(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, first) for sig in EXIT_CODES}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM inside `signals_raise`: `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within this block SIGINT and SIGTERM raise `Interrupted` where the code is, for work that may stop at any
    point (SIGTERM's default would end the process without a word). Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_CODES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
