"""Git pushes, new remotes, copies and uploads seen by a real agent daemon, over real transports.

The agent (a `dlp-agent run` child) watches program starts through the kernel's process-events
connector, as root here; pushes go to bare repositories over the file and local transports, over
ssh through a stand-in that runs the remote command locally, and over smart HTTP to `git
http-backend`; uploads go through scp, rsync and curl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import git_remotes as gr
from tests.agent_process import Agent, write_config
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the process-events connector needs CAP_NET_ADMIN")

MARKER = "ACME-PROPRIETARY-7731"
RULE = f"""
rule customer_marker {{
    meta:
        severity = "high"
        category = "source_code"
    strings:
        $a = "{MARKER}"
    condition:
        $a
}}
"""
CODE = {"src/app.py": f"# {MARKER}\ndef handler(event):\n    return event\n", "README.md": "customer app\n"}


def _agent(tmp_path: Path, *, allowed: tuple[str, ...] = (), report: str = "protected") -> tuple[Agent, Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "customer.yar").write_text(RULE)
    protected = tmp_path / "customer"
    protected.mkdir()
    allowed_list = ", ".join(f'"{a}"' for a in allowed)
    config = write_config(tmp_path, rules, egress=f'enabled = true\nreport = "{report}"\nallowed_remotes = [{allowed_list}]')
    with config.open("a") as f:
        f.write(f'[protected]\nfolders = ["{protected}"]\n')
    return Agent(config), protected


def _of_type(agent: Agent, kind: str) -> list[dict]:
    """This test's events of ``kind``: the agent sees every program on the machine, other tests' too."""
    own = str(agent.config.parent)
    return [e for e in agent.events() if e["type"] == kind and (e.get("path") or "").startswith(own)]


def _wait_events(agent: Agent, kind: str, count: int, timeout: float = 30) -> list[dict]:
    wait_for(lambda: len(_of_type(agent, kind)) >= count, timeout=timeout, message=f"{count} {kind} event(s)\n{agent.read_log()[-3000:]}")
    return _of_type(agent, kind)


def test_a_push_over_every_transport_is_an_event(tmp_path: Path) -> None:
    agent, protected = _agent(tmp_path)
    try:
        repo = gr.make_repo(protected / "app", CODE)
        remotes = tmp_path / "remotes"
        stand_in = gr.ssh_stand_in(tmp_path / "bin")
        with gr.GitHttpServer(remotes) as http:
            targets = {
                "file": f"file://{gr.make_bare(remotes / 'by-file.git')}",
                "local": str(gr.make_bare(remotes / "by-path.git")),
                "ssh": f"vendor-host:{gr.make_bare(remotes / 'by-ssh.git')}",
                "http": http.url("by-http.git"),
            }
            gr.make_bare(remotes / "by-http.git")
            for transport, url in targets.items():
                env = {"GIT_SSH_COMMAND": str(stand_in)} if transport == "ssh" else None
                gr.push(repo, url, ["main"], env=env)
        for name in ("by-file.git", "by-path.git", "by-ssh.git", "by-http.git"):
            assert "refs/heads/main" in gr.refs_of(remotes / name)
        pushes = _wait_events(agent, "git.push", 4)
    finally:
        agent.stop()
    by_transport = {e["destination"]["transport"]: e for e in pushes}
    assert set(by_transport) >= {"file", "local", "ssh", "http"}, [e["destination"] for e in pushes]
    assert by_transport["ssh"]["destination"]["host"] == "vendor-host"
    assert by_transport["ssh"]["destination"]["path"] == str(remotes / "by-ssh.git")
    assert by_transport["http"]["destination"]["host"] == "127.0.0.1"
    assert by_transport["file"]["destination"]["host"] is None
    for event in pushes:
        assert event["channel"] == "egress"
        assert event["path"] == str(repo)
        assert event["refs"] == ["main"]
        assert event["repository"]["protected"] is True
        assert "folder" in event["repository"]["reasons"]
        assert event["severity"] == "high"
        assert os.path.basename(event["process"]["exe"]).startswith("git")
        assert {m["member"] for m in event["matches"]} == {"src/app.py"}


def test_an_allowed_remote_stays_quiet(tmp_path: Path) -> None:
    allowed = tmp_path / "remotes" / "customer"
    agent, protected = _agent(tmp_path, allowed=(f"{allowed}/**",))
    try:
        repo = gr.make_repo(protected / "app", CODE)
        gr.push(repo, str(gr.make_bare(allowed / "app.git")), ["main"])
        elsewhere = gr.make_bare(tmp_path / "remotes" / "personal.git")
        gr.push(repo, str(elsewhere), ["main"])
        pushes = _wait_events(agent, "git.push", 1)
    finally:
        agent.stop()
    assert [e["destination"]["path"] for e in pushes] == [str(elsewhere)]


def test_pushes_of_unrelated_code_are_quiet_and_matching_code_anywhere_is_not(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path)
    try:
        personal = gr.make_repo(tmp_path / "home" / "dotfiles", {"vimrc": "set number\n"})
        gr.push(personal, str(gr.make_bare(tmp_path / "remotes" / "dotfiles.git")), ["main"])
        smuggled = gr.make_repo(tmp_path / "home" / "notes", {"lib/handler.py": CODE["src/app.py"]})
        gr.push(smuggled, str(gr.make_bare(tmp_path / "remotes" / "notes.git")), ["main"])
        pushes = _wait_events(agent, "git.push", 1)
    finally:
        agent.stop()
    assert [e["path"] for e in pushes] == [str(smuggled)]
    assert pushes[0]["repository"]["reasons"] == ["signature"]
    assert pushes[0]["matches"][0]["member"] == "lib/handler.py"
    assert pushes[0]["matches"][0]["rule"] == "customer_marker"


def test_new_remotes_clones_and_copies_of_a_protected_repository(tmp_path: Path) -> None:
    agent, protected = _agent(tmp_path)
    try:
        repo = gr.make_repo(protected / "app", CODE)
        gr.git(repo, "remote", "add", "mine", "https://jdoe:ghp_SECRET@github.example/jdoe/app.git")
        remote = _wait_events(agent, "git.remote", 1)[0]
        clone = tmp_path / "home" / "clone"
        gr.git(tmp_path, "clone", "-q", str(repo), str(clone))
        copy = tmp_path / "home" / "copy"
        shutil.copytree(repo, copy)
        gr.git(copy, "status", "--short")
        copies = _wait_events(agent, "git.clone", 2)
    finally:
        agent.stop()
    assert remote["destination"]["host"] == "github.example"
    assert remote["destination"]["remote"] == "mine"
    assert "SECRET" not in str(remote) and "jdoe:" not in remote["destination"]["url"]
    assert {e["path"] for e in copies} == {str(clone), str(copy)}
    for event in copies:
        assert event["repository"]["copy_of"] == str(repo)
        assert "root_commit" in event["repository"]["reasons"]


@pytest.mark.skipif(bool(gr.tools_missing("scp", "rsync", "curl")), reason="scp, rsync and curl are installed by make apt")
def test_uploads_of_matching_files_name_their_destination(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path)
    stand_in = gr.ssh_stand_in(tmp_path / "bin")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    secret = outbox / "handler.py"
    secret.write_text(CODE["src/app.py"])
    clean = outbox / "notes.txt"
    clean.write_text("lunch at noon\n")
    landed = tmp_path / "landed"
    landed.mkdir()
    try:
        gr.scp_upload(stand_in, [secret, clean], landed, legacy=True)
        gr.rsync_upload(stand_in, [outbox], landed)
        with gr.GitHttpServer(tmp_path / "http", uploads=landed) as http:
            gr.curl_upload(secret, http.upload_url("handler.py"))
            uploads = _wait_events(agent, "net.upload", 3)
    finally:
        agent.stop()
    tools = sorted(e["destination"]["tool"] for e in uploads)
    assert tools == ["curl", "rsync", "scp"], [e["destination"] for e in uploads]
    for event in uploads:
        assert event["path"] == str(secret)
        assert event["matches"][0]["rule"] == "customer_marker"
        assert event["severity"] == "high"
    by_tool = {e["destination"]["tool"]: e for e in uploads}
    assert by_tool["scp"]["destination"]["host"] == "vendor-host"
    assert by_tool["scp"]["transfer"]["files_named"] == 2
    assert by_tool["rsync"]["transfer"]["files_matched"] == 1
    assert by_tool["curl"]["destination"]["host"] == "127.0.0.1"


def test_status_names_the_process_source(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path)
    try:
        subprocess.run(["/bin/true"], check=True)
        wait_for(lambda: "exec" in ((agent.status().get("sources") or {}).get("processes") or {}).get("message", ""), timeout=30, message="health written")
        sources = agent.status()["sources"]
    finally:
        agent.stop()
    assert sources["processes"]["state"] == "ok", sources
    assert "exec" in sources["processes"]["message"]
    assert sources["egress"]["state"] == "ok"
