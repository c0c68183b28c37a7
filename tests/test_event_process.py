"""An event's process and enforcement at the collector: typed and bounded at ingest, shown as sent by the review API."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from agent import events as contract
from server.api.schemas import MAX_CMDLINE_CHARS, MAX_PARENTS, EnforcementIn, ProcessFactsIn, ProcessIn
from tests.collector_env import event_record

WRITER = {
    "pid": 4242, "exe": "/usr/bin/cp", "cmdline": "cp -r src /media/jdoe/STICK", "uid": 1000, "user": "jdoe", "ppid": 4200,
    "parents": [{"pid": 4200, "exe": "/usr/bin/bash", "cmdline": "bash", "uid": 1000, "user": "jdoe", "ppid": 1}],
}  # fmt: skip
QUARANTINED = {
    "action": "quarantine", "mode": "enforce", "done": True, "detail": None,
    "quarantine": {"id": "0b7c5a52-4d7e-4f0a-9a3c-2b1d7e9f6a11", "ephemeral_key": "ab" * 32, "original_path": "/media/x/a.zip",
                   "size": 10, "sha256": "cd" * 32},
}  # fmt: skip


def test_the_process_fields_are_the_agents() -> None:
    assert set(ProcessFactsIn.model_fields) == set(contract.PROCESS_FIELDS)
    assert set(ProcessIn.model_fields) == {*contract.PROCESS_FIELDS, "parents"}
    action, _none = get_args(EnforcementIn.model_fields["action"].annotation)
    assert set(get_args(action)) == set(contract.ENFORCEMENT_ACTIONS)


def test_process_and_enforcement_come_back_as_sent(client, enroll, admin) -> None:
    agent = enroll()
    sent = event_record(process=WRITER, enforcement=QUARANTINED)
    older = event_record()  # an agent from before issue 16 sends neither
    response = client.post("/api/v1/events", json={"events": [sent, older]}, headers=agent.headers)
    assert response.status_code == 200, response.text
    shown = {item["id"]: item for item in client.get("/api/v1/events", headers=admin.headers).json()["items"]}
    assert shown[sent["id"]]["process"] == WRITER and shown[sent["id"]]["enforcement"] == QUARANTINED
    assert shown[older["id"]]["process"] is None and shown[older["id"]]["enforcement"] is None
    detail = client.get(f"/api/v1/events/{sent['id']}", headers=admin.headers).json()
    assert detail["process"] == WRITER and detail["enforcement"] == QUARANTINED


def _refused(client: Any, agent: Any, **fields: Any) -> list[list[Any]]:
    good, bad = event_record(), event_record(**fields)
    response = client.post("/api/v1/events", json={"events": [good, bad]}, headers=agent.headers)
    assert response.status_code == 422, response.text
    return [problem["loc"] for problem in response.json()["detail"]]


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"process": {"pid": "4242"}}, ["process", "pid"]),
        ({"process": {"pid": -1}}, ["process", "pid"]),
        ({"process": {"exe": "/bin/sh"}}, ["process", "pid"]),
        ({"process": {"pid": 1, "cmdline": "x" * (MAX_CMDLINE_CHARS + 1)}}, ["process", "cmdline"]),
        ({"process": {"pid": 1, "parents": [{"pid": n} for n in range(MAX_PARENTS + 1)]}}, ["process", "parents"]),
        ({"process": {"pid": 1, "parents": [{"pid": 2, "user": ["root"]}]}}, ["process", "parents", 0, "user"]),
        ({"process": "cp"}, ["process"]),
        ({"enforcement": {"action": "shred", "mode": "enforce", "done": True}}, ["enforcement", "action"]),
        ({"enforcement": {"action": "clear", "mode": "maybe", "done": True}}, ["enforcement", "mode"]),
        ({"enforcement": {"action": "clear", "mode": "enforce", "done": "yes"}}, ["enforcement", "done"]),
        ({"enforcement": {"action": "release", "mode": "enforce", "done": True, "command": 0}}, ["enforcement", "command"]),
        ({"enforcement": {"action": "quarantine", "mode": "enforce", "done": True, "quarantine": {"id": "../x"}}}, ["enforcement", "quarantine", "id"]),
    ],
)
def test_malformed_process_or_enforcement_is_refused_naming_the_event(client, enroll, admin, fields, where) -> None:
    agent = enroll()
    assert ["body", "events", 1, *where] in _refused(client, agent, **fields)
    assert client.get("/api/v1/events", headers=admin.headers).json()["items"] == []


def test_unknown_extras_are_kept_but_must_be_storable(client, enroll, admin) -> None:
    agent = enroll()
    kept = event_record(process={**WRITER, "cwd": "/home/jdoe"}, enforcement={**QUARANTINED, "rule": "allowed stick", "later": {"a": 1}})
    assert client.post("/api/v1/events", json={"events": [kept]}, headers=agent.headers).status_code == 200
    (item,) = client.get("/api/v1/events", headers=admin.headers).json()["items"]
    assert item["process"]["cwd"] == "/home/jdoe" and item["enforcement"]["later"] == {"a": 1}
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    response = client.post(
        "/api/v1/events", json={"events": [event_record(process={"pid": 1, "deep": deep})]}, headers=agent.headers
    )
    assert response.status_code == 422 and "events[0]" in response.text


def test_events_are_filtered_by_their_programs_name(client, enroll, reviewer) -> None:
    from tests.test_ui_views import _ids, _log_in

    agent = enroll()
    copied = event_record(process=WRITER)
    clipped = event_record(type="clipboard.copy", channel="clipboard", path=None, device=None, process={"pid": 7, "exe": "C:\\Tools\\xclip"})
    unknown = event_record(process={"pid": 9, "exe": None})
    older = event_record()
    assert client.post("/api/v1/events", json={"events": [copied, clipped, unknown, older]}, headers=agent.headers).status_code == 200

    def listed(**params: str) -> list[str]:
        response = client.get("/api/v1/events", params=params, headers=reviewer.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert listed(process="cp") == [copied["id"]]
    assert listed(process="xclip") == [clipped["id"]]  # a Windows path's base name too
    assert listed(process="/usr/bin/cp") == [] and listed(process="c") == []  # the name, exactly
    assert listed(process="cp", channel="clipboard") == []
    _log_in(client, reviewer)
    page = client.get("/ui/events").text
    assert '<a href="/ui/events?process=cp">' in page and '<a href="/ui/events?process=xclip">' in page
    assert _ids(client.get("/ui/events?process=xclip").text) == [clipped["id"]]
    assert 'name="process" value="xclip"' in client.get("/ui/events?process=xclip").text
