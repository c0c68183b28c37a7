"""The one stoppable thread base every long-running part of the agent uses."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.supervisor import Supervisor

log = logging.getLogger(__name__)


class StoppableThread(threading.Thread):
    """A daemon thread with a stop event; ``stop()`` is idempotent.

    Subclasses implement ``run_loop``; sleeping is ``self.wait(seconds)``, which
    returns True as soon as the thread is asked to stop.

    A loop that raises is logged; unsupervised, the thread then ends (re-raising, so
    ``threading.excepthook`` sees it too). Under a ``Supervisor`` (``supervisor.watch(thread)``),
    that or a loop returning without being asked to stop is a death: the thread reports it and,
    when the supervisor says so, runs ``run_loop`` again on the same thread after the
    supervisor's delay, so the object others hold (the shipper the pipeline wakes, say) stays
    the one that runs.
    """

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._stop_event = threading.Event()
        self.supervisor: Supervisor | None = None

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._stop_event.wait(seconds)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to stop and wait for it (harmless when already stopped)."""
        self._stop_event.set()
        self.on_stop()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def on_stop(self) -> None:
        """Hook to unblock ``run_loop`` (close a file descriptor, say)."""

    def run(self) -> None:
        while True:
            try:
                self.run_loop()
                error = "its loop ended without being asked to stop"
            except Exception as exc:  # a dying thread must say so, not vanish
                log.exception("%s stopped on an unexpected error", self.name)
                if self.supervisor is None:
                    raise
                error = f"{type(exc).__name__}: {exc}"
            supervisor = self.supervisor
            if self.stopping or supervisor is None:
                return
            delay = supervisor.died(self, error)
            if delay is None or self.wait(delay):
                return
            supervisor.restarted(self)

    def run_loop(self) -> None:
        raise NotImplementedError
