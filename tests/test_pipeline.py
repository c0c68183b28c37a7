"""The pipeline between sources and spool: events land, queued work survives a stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.pipeline import Pipeline
from agent.policy import Context
from agent.scanning import Scanner, load_rules
from agent.sources.work import FileWork
from agent.spool import Spool
from tests.conftest import SECRET_WORD
from tests.waiting import wait_for

CONTEXT = Context(host="h", agent_version="t", ruleset_version="v")


class GatedScanner(Scanner):
    """A real scanner that waits at a gate before each file, to hold work in the queue."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def scan_path(self, path: str):
        self.gate.wait(10)
        return super().scan_path(path)


@pytest.fixture
def start_pipeline() -> Iterator[Callable[[Pipeline], Pipeline]]:
    """``start_pipeline(pipeline)``: its worker threads are stopped at the end whatever the test did (stopping twice is harmless)."""
    started: list[Pipeline] = []

    def run(pipeline: Pipeline) -> Pipeline:
        started.append(pipeline)
        pipeline.start()
        return pipeline

    yield run
    for pipeline in started:
        pipeline.stop(drain_s=0)


def test_matches_are_spooled_and_clean_files_are_not(tmp_path: Path, rules_dir: Path, start_pipeline) -> None:
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 20)
    pipeline = start_pipeline(Pipeline(Scanner(load_rules(rules_dir)), spool, CONTEXT, threads=2, queue_size=100))
    try:
        for i in range(10):
            f = tmp_path / f"f{i}.txt"
            f.write_bytes(SECRET_WORD.encode() if i % 2 else b"plain")
            assert pipeline.submit(FileWork(path=str(f)))
        wait_for(lambda: pipeline.processed == 10)
        assert spool.depth() == 5
        assert pipeline.health()["state"] == "ok"
    finally:
        assert pipeline.stop() == []
        spool.close()


def test_stop_returns_work_it_could_not_finish(tmp_path: Path, rules_dir: Path, start_pipeline) -> None:
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 20)
    scanner = GatedScanner(load_rules(rules_dir))
    pipeline = start_pipeline(Pipeline(scanner, spool, CONTEXT, threads=1, queue_size=100))
    items = [FileWork(path=str(tmp_path / f"f{i}.txt")) for i in range(5)]
    for work in items:
        (tmp_path / Path(work.path).name).write_bytes(SECRET_WORD.encode())
        pipeline.submit(work)
    left_holder: list = []
    stopper = threading.Thread(target=lambda: left_holder.append(pipeline.stop(drain_s=0.2)))
    stopper.start()
    try:
        wait_for(lambda: pipeline._workers[0].stopping)  # draining gave up; the worker was told to stop
    finally:
        scanner.gate.set()  # the item in flight finishes
        stopper.join(10)
    (left,) = left_holder
    # One item was in flight and finished; the rest come back to be queued at the next start.
    assert len(left) == 4 and all(isinstance(w, FileWork) for w in left)
    assert spool.depth() == 1
    spool.close()


def test_full_queue_is_counted_not_silent(tmp_path: Path, rules_dir: Path, monkeypatch) -> None:
    import agent.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "SUBMIT_TIMEOUT_S", 0.05)
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 20)
    pipeline = Pipeline(Scanner(load_rules(rules_dir)), spool, CONTEXT, threads=1, queue_size=10)
    # Not started: nothing drains the queue.
    accepted = [pipeline.submit(FileWork(path=f"/nowhere/{i}")) for i in range(12)]
    assert accepted.count(False) == 2 and pipeline.overflowed == 2
    assert pipeline.health()["state"] == "degraded"
    spool.close()


def test_work_the_spool_could_not_take_is_handed_back_at_stop(tmp_path: Path, rules_dir: Path, start_pipeline) -> None:
    from agent.spool import SpoolFull

    class FullSpool:
        """A spool on a full disk (the real one is exercised in test_daemon's tmpfs test)."""

        attempts = 0

        def put(self, event, *, matched):
            FullSpool.attempts += 1
            raise SpoolFull("database or disk is full")

    pipeline = start_pipeline(Pipeline(Scanner(load_rules(rules_dir)), FullSpool(), CONTEXT, threads=1, queue_size=10))  # type: ignore[arg-type]
    leak = tmp_path / "leak.txt"
    leak.write_bytes(SECRET_WORD.encode())
    pipeline.submit(FileWork(path=str(leak)))
    wait_for(lambda: FullSpool.attempts >= 2 and pipeline.health()["message"] == "spool: disk full")
    left = pipeline.stop(drain_s=0.1)
    assert [w.path for w in left] == [str(leak)]


def test_idle_scanners_sleep_until_stop_wakes_every_one(tmp_path: Path, rules_dir: Path, start_pipeline) -> None:
    """The workers wait for work with no timeout: ``stop`` wakes each one, none is left asleep in the queue."""
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 20)
    pipeline = start_pipeline(Pipeline(Scanner(load_rules(rules_dir)), spool, CONTEXT, threads=3, queue_size=2))
    try:
        wait_for(lambda: all(w.is_alive() for w in pipeline._workers), message="the scanners running")
        assert pipeline.stop(drain_s=0) == []
        assert not any(w.is_alive() for w in pipeline._workers), "a scanner was left asleep by stop()"
        assert pipeline._queue.unfinished_tasks == 0
    finally:
        spool.close()
