"""Agent to collector through real processes on loopback: nothing lost, nothing doubled.

Events are put into the running agent's spool by the test (as its pipeline would) so that
thousands can be produced quickly; the agent's own shipper moves them.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time

from agent.spool import Spool
from tests.collector_env import free_port
from tests.conftest import SECRET_WORD
from tests.stack import cli, delivered, delivery_faults, event_path, produce, spool_depth
from tests.tlscerts import self_signed
from tests.waiting import wait_for


def test_a_file_written_becomes_an_event_at_the_collector(stack):
    serve = stack.collector()
    config = stack.agent_config()
    stack.enroll(config, serve.url)
    assert (config.parent / "credentials.json").stat().st_mode & 0o777 == 0o600
    agent = stack.agent(config)
    (config.parent / "Desktop" / "notes.txt").write_text(f"copied {SECRET_WORD} to my stick\n")
    delivered(stack, 1, timeout=30)
    wait_for(lambda: agent.status().get("last_shipped_at"), timeout=10, message="status shows the shipment")


def test_collector_down_while_20000_events_are_produced(stack):
    port = free_port()
    config = stack.agent_config()
    serve = stack.collector(port)
    stack.enroll(config, serve.url)
    serve.stop()
    agent = stack.agent(config)
    ids = produce(agent.spool, 20_000)
    time.sleep(2)  # the shipper meets a dead collector and backs off
    assert spool_depth(agent.spool) == 20_000
    assert "cannot reach" in agent.read_log()
    stack.collector(port)
    delivered(stack, 20_000, timeout=240)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    stack.assert_each_once(ids)


def test_agent_killed_ten_times_while_shipping(stack, fault_proxy_factory):
    serve = stack.collector()
    proxy = fault_proxy_factory(serve.port)
    proxy.hold_replies(0.2)  # slow replies, so the kills land while batches are in flight
    config = stack.agent_config(batch_events="100")
    stack.enroll(config, proxy.url)
    agent = stack.agent(config)
    ids = produce(agent.spool, 3_000)
    rng = random.Random(7)
    for _ in range(10):
        time.sleep(rng.uniform(0.3, 1.2))
        agent.stop(signal.SIGKILL)
        agent = stack.agent(config)
    proxy.hold_replies(0)
    delivered(stack, 3_000, timeout=120)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    stack.assert_each_once(ids)


def test_collector_restarted_in_the_middle_of_batches(stack):
    port = free_port()
    serve = stack.collector(port)
    config = stack.agent_config(batch_events="200")
    stack.enroll(config, serve.url)
    agent = stack.agent(config)
    ids = produce(agent.spool, 5_000)
    wait_for(lambda: stack.stored() > 0, timeout=30, message="shipping started")
    serve.stop(signal.SIGKILL)
    stack.collector(port)
    delivered(stack, 5_000)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    stack.assert_each_once(ids)


def test_slow_collector_and_500s_lose_and_double_nothing(stack, fault_proxy_factory):
    serve = stack.collector()
    proxy = fault_proxy_factory(serve.port)
    config = stack.agent_config(timeout_s="1", batch_events="100")
    stack.enroll(config, proxy.url)
    proxy.hold_replies(3)  # the collector commits, the agent gives up after 1 s and retries
    agent = stack.agent(config)
    ids = produce(agent.spool, 300)
    wait_for(lambda: stack.stored() >= 100, timeout=30, message="a batch committed behind a timed-out request")
    # The collector may commit before the agent's 1 s timeout fires: wait for the agent to give up.
    wait_for(lambda: "did not answer" in agent.read_log(), timeout=30, message="the agent gave up on the held reply")
    proxy.hold_replies(0)
    proxy.release()
    proxy.fail_next(4, 500)
    delivered(stack, 300, timeout=120)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    stack.assert_each_once(ids)
    assert proxy.failed == 4


def test_spool_cap_drops_routine_events_first_and_the_count_arrives(stack):
    port = free_port()
    serve = stack.collector(port)
    config = stack.agent_config()
    config.write_text(config.read_text().replace('path = "spool.db"', 'path = "spool.db"\nmax_bytes = 1048576'))
    stack.enroll(config, serve.url)
    serve.stop()
    agent = stack.agent(config)
    routine = produce(agent.spool, 2_000, matched=False, max_bytes=1 << 20)
    matches = produce(agent.spool, 2_000, matched=True, max_bytes=1 << 20)  # more than fits: routine ones make room
    stack.collector(port)
    wait_for(lambda: "spool.dropped" in stack.stored_types(), timeout=120, message="drop report at the collector")
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    with sqlite3.connect(stack.data_dir / "collector.db") as db:
        reports = [json.loads(b) for (b,) in db.execute("SELECT body FROM events WHERE type = 'spool.dropped'")]
    stored = {event_id for event_id, _ in stack.stored_rows()}
    assert set(matches) <= stored, "match events are never dropped"
    dropped_routine = len(set(routine) - stored)
    assert dropped_routine > 0 and sum(r["dropped"] for r in reports) == dropped_routine
    stack.assert_each_once([*matches, *(event_id for event_id in routine if event_id in stored)])


def test_revoked_agent_keeps_spooling_and_ships_after_enrolling_again(stack):
    serve = stack.collector()
    config = stack.agent_config()
    stack.enroll(config, serve.url)
    agent_id = json.loads((config.parent / "credentials.json").read_text())["agent_id"]
    assert cli("server.cli", "agent", "revoke", agent_id, "--data-dir", str(stack.data_dir)).returncode == 0
    agent = stack.agent(config)
    ids = produce(agent.spool, 50)
    wait_for(lambda: "revoked" in agent.read_log(), timeout=30, message="a clear error about the revocation")
    assert spool_depth(agent.spool) == 50 and stack.stored() == 0
    stack.enroll(config, serve.url)  # IT re-enrolls the running agent
    delivered(stack, 50, timeout=120)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    stack.assert_each_once(ids)


def test_wrong_ca_keeps_events_and_ships_once_fixed(stack, tmp_path):
    right, wrong = self_signed(tmp_path / "tls", "collector"), self_signed(tmp_path / "tls", "impostor")
    serve = stack.collector(tls=right)
    config = stack.agent_config()
    stack.enroll(config, serve.url, "--ca", str(right[0]))
    good = config.read_text()
    config.write_text(good.replace("[server]\n", f'[server]\nca_file = "{wrong[0]}"\n'))
    agent = stack.agent(config)
    ids = produce(agent.spool, 20)
    wait_for(lambda: "check [server] ca_file" in agent.read_log(), timeout=30, message="a clear TLS error")
    assert spool_depth(agent.spool) == 20
    agent.stop()
    config.write_text(good)
    agent = stack.agent(config)
    delivered(stack, 20, timeout=60)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    stack.assert_each_once(ids)


def test_an_event_the_collector_refuses_is_set_aside_and_the_rest_delivered(stack):
    (stack.data_dir / "server.toml").write_text("[ingest]\nmax_batch_events = 40\n")  # the agent sends 500: 413, then halves
    serve = stack.collector()
    config = stack.agent_config()
    stack.enroll(config, serve.url)
    agent = stack.agent(config)
    ids = produce(agent.spool, 150)
    with Spool(str(agent.spool), max_bytes=1 << 30) as spool:
        spool.put({"id": "not-a-uuid", "type": "file.write", "channel": "carrier-pigeon", "occurred_at": "yesterday"}, matched=True)
    ids += produce(agent.spool, 150)
    delivered(stack, 300, timeout=120)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    stack.assert_each_once(ids)
    with Spool.open_readonly(str(agent.spool)) as reader:
        assert reader.get_state("rejected_total") == 1
    assert "rejected event not-a-uuid" in agent.read_log()


def test_the_delivery_check_fails_on_a_lost_doubled_or_relabelled_event():
    """The check above must be able to fail: a doubled event cannot share its id at the collector
    (the column is unique), so it shows as the same content under a second id."""
    a, b, c = "0a" * 16, "0b" * 16, "0c" * 16
    ids = [a, b, c]
    rows = [(event_id, event_path(event_id)) for event_id in ids]
    assert delivery_faults(ids, rows) == []
    faults = {
        "lost": delivery_faults(ids, rows[:2]),
        "doubled under a new id": delivery_faults(ids, [*rows, ("0d" * 16, event_path(b))]),
        "the same id twice": delivery_faults(ids, [*rows, rows[0]]),
        "content swapped": delivery_faults(ids, [(a, event_path(b)), (b, event_path(a)), rows[2]]),
        "an id produced twice": delivery_faults([*ids, a], rows),
    }
    assert all(faults.values()), faults
    assert "event stored under a second id: 1" in "; ".join(faults["doubled under a new id"])
