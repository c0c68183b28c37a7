"""SIEM integration: CEF and syslog formats, syslog and webhook alert senders, bulk export."""
