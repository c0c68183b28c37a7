"""The one stoppable thread base every long-running part of the agent uses."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class StoppableThread(threading.Thread):
    """A daemon thread with a stop event; ``stop()`` is idempotent.

    Subclasses implement ``run_loop``; sleeping is ``self.wait(seconds)``, which
    returns True as soon as the thread is asked to stop.
    """

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._stop_event = threading.Event()

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
        try:
            self.run_loop()
        except Exception:  # a dying source must say so, not vanish
            log.exception("%s stopped on an unexpected error", self.name)
            raise

    def run_loop(self) -> None:
        raise NotImplementedError
