"""The one exception every SIEM sender raises when an event did not get through."""

from __future__ import annotations


class DeliveryError(Exception):
    """An event was not handed to the SIEM; the caller decides whether to retry or drop it.

    Senders raise only this for network trouble, so callers need not know which
    transport (socket, TLS, HTTP library) was underneath. The message names the
    destination and the reason but never carries secrets, auth headers or URL paths.
    """
