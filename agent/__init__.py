"""Endpoint agent: watches a vendor workstation and reports customer content leaving it."""

__version__ = "0.1.0"
