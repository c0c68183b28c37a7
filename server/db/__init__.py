"""Collector storage: schema, engine, migrations."""
