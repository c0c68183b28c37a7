"""The ``dlp-agent`` command line."""
