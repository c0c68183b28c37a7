"""The ingest benchmark's baseline (bench/baseline_ingest.py --indexes) has the collector's own schema for events."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Engine, create_engine, inspect

from server.db.engine import normalize_url

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _baseline_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_ingest", BENCH / "baseline_ingest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _where(index: dict[str, Any]) -> str | None:
    options = index.get("dialect_options") or {}
    where = options.get("sqlite_where", options.get("postgresql_where"))
    return re.sub(r"[\s()]", "", str(where)).lower() if where is not None else None


def _index_shapes(engine: Engine, table: str) -> set[tuple[tuple[str, ...], bool, str | None]]:
    """Every index of ``table`` as (columns, unique, partial condition), its unique constraints as unique indexes."""
    inspector = inspect(engine)
    shapes = {(tuple(i["column_names"]), bool(i["unique"]), _where(i)) for i in inspector.get_indexes(table)}
    shapes |= {(tuple(u["column_names"]), True, None) for u in inspector.get_unique_constraints(table)}
    return shapes


def test_indexed_baseline_has_the_events_tables_unique_id_and_every_secondary_index(database_url: str) -> None:
    # database_url is migrated by the collector's own migrations, so this compares with what they build.
    baseline = _baseline_module()
    engine = create_engine(normalize_url(database_url))
    try:
        baseline.create_schema(engine, indexes=True)
        ours = _index_shapes(engine, "events")
        theirs = _index_shapes(engine, "baseline_events")
        assert (("id",), True, None) in ours
        assert ("destination_host", "seq") in {columns for columns, _, where in ours if where}
        assert theirs == ours
    finally:
        baseline.metadata.drop_all(engine)
        engine.dispose()


def test_bare_baseline_has_no_index(tmp_path: Path) -> None:
    baseline = _baseline_module()
    engine = create_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        baseline.create_schema(engine)
        assert _index_shapes(engine, "baseline_events") == set()
    finally:
        engine.dispose()
