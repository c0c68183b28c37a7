"""The collector: enrollment, ingest and review for security staff."""
