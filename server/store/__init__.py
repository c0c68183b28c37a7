"""Data functions of the collector: keyword-only arguments, a connection, no HTTP."""
