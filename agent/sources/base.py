"""What every source is to the daemon: something that starts, stops and says how it is doing."""

from __future__ import annotations

from typing import Any, Protocol


class Source(Protocol):
    """The daemon's view of a source (files, USB, clipboard, the protected-folder indexer).

    A source emits work through the ``Emit`` callback it was given (agent/sources/work.py) and
    counts, in its health, every item that callback did not take.
    """

    def start(self) -> None:
        """Begin watching (on the source's own thread)."""

    def stop(self) -> None:
        """Stop watching and wait for the thread; harmless twice."""

    def health(self) -> dict[str, Any]:
        """At least ``{"state": "ok" | "degraded" | "unavailable", "message": str}``."""
