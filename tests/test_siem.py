"""SIEM outputs: CEF escaping, syslog over real loopback sockets, the webhook against a real HTTP server, export."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import hashlib
import hmac
import http.server
import io
import json
import queue
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.siem.cef import format_cef
from server.siem.errors import DeliveryError
from server.siem.export import CSV_COLUMNS, write_events
from server.siem.syslog import SyslogSender, format_rfc5424
from server.siem.webhook import WebhookSender
from tests.waiting import wait_for

VERSION = "0.1.0"
NOW = dt.datetime(2026, 11, 24, 9, 12, 5, 250000, tzinfo=dt.UTC)
HOSTILE = "pipe|equals=back\\slash\nnew\rcr\x00nul\x1bansi\ttab\x7fdel\u0085nel \u2028ls"
BIG = 100_000
WAIT = 5.0

EVENT: dict[str, Any] = {
    "id": "7d0c1c0e-3f0e-4b8e-9a53-1f6f2a9c5b10",
    "seq": 42,
    "agent_id": "a1b2c3d4",
    "vendor": "acme-bpo",
    "host": "vendor-ws-017",
    "user": "jdoe",
    "channel": "usb",
    "type": "usb.write",
    "occurred_at": "2026-11-24T09:12:03.412Z",
    "detected_at": "2026-11-24T09:12:03.530Z",
    "received_at": "2026-11-24T09:12:04.001Z",
    "path": "/media/jdoe/STICK/backup.zip",
    "sha256": "9f2c" * 16,
    "size": 20480,
    "status": "match",
    "reason": None,
    "severity": "critical",
    "matches": [
        {"rule": "private_key_pem", "namespace": "credentials", "severity": "critical", "member": "keys/id_rsa"},
        {"rule": "aws_access_key", "namespace": "credentials", "severity": "high", "member": "env"},
        {"rule": "private_key_pem", "namespace": "credentials", "severity": "critical", "member": "keys/id_dsa"},
        {"rule": "customer_marking", "namespace": "documents", "severity": "medium", "member": "a.docx"},
    ],
    "device": {"mountpoint": "/media/jdoe/STICK", "vendor": "SanDisk", "model": "Ultra", "serial": "4C530001"},
    "source_ip": "203.0.113.7",
    "source_country": "NL",
    "triage": {"status": "new", "assignee": None},
}


def event(**changes: Any) -> dict[str, Any]:
    return copy.deepcopy(EVENT) | changes


def epoch_ms(iso: str) -> str:
    moment = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return str(round(moment.timestamp() * 1000))


# --- an independent reader of what the CEF spec says a line means -------------------------------

_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_EXTENSION_UNESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def cleaned(value: str) -> str:
    """What an extension value should read back as: control characters gone, LF and CR kept."""
    return _CONTROL.sub("", value)


def cleaned_header(value: str) -> str:
    return cleaned(value).replace("\n", " ").replace("\r", " ")


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Split a CEF line into its seven header fields and its extension, failing on any ambiguity."""
    assert not set(line) & {"\n", "\r", "\x00"}, "raw line breaks or NUL in a CEF line"
    header: list[str] = []
    current: list[str] = []
    index = 0
    while len(header) < 7:
        char = line[index]
        if char == "\\":
            escaped = line[index + 1]
            assert escaped in "\\|", f"bad header escape \\{escaped}"
            current.append(escaped)
            index += 2
        elif char == "|":
            header.append("".join(current))
            current = []
            index += 1
        else:
            current.append(char)
            index += 1
    return header, parse_extension(line[index:])


def parse_extension(text: str) -> dict[str, str]:
    """Every unescaped ``=`` ends a key; the key is the word before it, its value runs to the next key."""
    chars: list[tuple[str, bool]] = []
    index = 0
    while index < len(text):
        if text[index] == "\\":
            escaped = text[index + 1]  # a dangling backslash fails here
            assert escaped in _EXTENSION_UNESCAPES, f"bad extension escape \\{escaped}"
            chars.append((_EXTENSION_UNESCAPES[escaped], True))
            index += 2
        else:
            chars.append((text[index], False))
            index += 1
    keys = []
    for position, (char, escaped) in enumerate(chars):
        if char == "=" and not escaped:
            start = position
            while start > 0 and chars[start - 1] != (" ", False):
                start -= 1
            key = "".join(c for c, _ in chars[start:position])
            assert re.fullmatch(r"[A-Za-z0-9]+", key), f"not a key: {key!r}"
            keys.append((start, position, key))
    fields: dict[str, str] = {}
    for number, (_, position, key) in enumerate(keys):
        end = keys[number + 1][0] - 1 if number + 1 < len(keys) else len(chars)
        assert key not in fields, f"key {key} twice"
        fields[key] = "".join(c for c, _ in chars[position + 1 : end])
    return fields


# --- CEF ----------------------------------------------------------------------------------------


def test_cef_maps_an_event_to_standard_keys() -> None:
    header, fields = parse_cef(format_cef(EVENT, product_version=VERSION))

    assert header == [
        "CEF:0", "DLP Endpoint", "dlp-endpoint", VERSION, "usb.write",
        "usb.write matched private_key_pem (+2 more)", "10",
    ]  # fmt: skip
    assert fields == {
        "rt": epoch_ms(EVENT["received_at"]),
        "start": epoch_ms(EVENT["occurred_at"]),
        "externalId": EVENT["id"],
        "cat": "usb",
        "dhost": "vendor-ws-017",
        "duser": "jdoe",
        "src": "203.0.113.7",
        "filePath": "/media/jdoe/STICK/backup.zip",
        "fileHash": EVENT["sha256"],
        "fsize": "20480",
        "cs1Label": "rules",
        "cs1": "private_key_pem,aws_access_key,customer_marking",
        "cs2Label": "vendor",
        "cs2": "acme-bpo",
        "cs3Label": "agent",
        "cs3": "a1b2c3d4",
        "cs4Label": "device",
        "cs4": "SanDisk Ultra 4C530001",
        "cs5Label": "status",
        "cs5": "match",
        "cs6Label": "ruleKinds",
        "cs6": "yara,yara,yara",
    }


def test_cef_leaves_out_missing_fields() -> None:
    header, fields = parse_cef(
        format_cef({"id": "x1", "type": "usb.mount", "channel": "usb", "size": "big"}, product_version=VERSION)
    )

    assert header[4:] == ["usb.mount", "usb.mount", "1"]
    assert fields == {"externalId": "x1", "cat": "usb"}


@pytest.mark.parametrize(
    "severity, expected",
    [(None, "1"), ("low", "3"), ("medium", "5"), ("high", "8"), ("critical", "10"), ("bogus", "1"), (["high"], "1")],
)
def test_cef_severity_scale(severity: Any, expected: str) -> None:
    header, _ = parse_cef(format_cef(event(severity=severity), product_version=VERSION))
    assert header[6] == expected


def test_cef_puts_ipv6_in_its_own_field_and_drops_non_addresses() -> None:
    _, v6 = parse_cef(format_cef(event(source_ip="2001:db8::7"), product_version=VERSION))
    _, junk = parse_cef(format_cef(event(source_ip="203.0.113.7 dhost=evil"), product_version=VERSION))

    assert "src" not in v6 and v6["c6a2"] == "2001:db8::7"
    assert "src" not in junk and "c6a2" not in junk and junk["dhost"] == "vendor-ws-017"


def test_cef_hostile_values_read_back_exactly() -> None:
    hostile = event(
        type=HOSTILE, host=HOSTILE, user=HOSTILE, path=HOSTILE, vendor=HOSTILE, agent_id=HOSTILE,
        status=HOSTILE, matches=[{"rule": HOSTILE}], device={"vendor": HOSTILE}, id=f"id={HOSTILE}"[:30],
    )  # fmt: skip
    header, fields = parse_cef(format_cef(hostile, product_version="1|2=3\\4\n"))

    assert header[3] == "1|2=3\\4 "
    assert header[4] == cleaned_header(HOSTILE)
    assert header[5] == cleaned_header(f"{HOSTILE} matched {HOSTILE}")
    for key in ("dhost", "duser", "filePath", "cs1", "cs2", "cs3", "cs4", "cs5"):
        assert fields[key] == cleaned(HOSTILE), key
    assert fields["externalId"] == cleaned(f"id={HOSTILE}"[:30])
    assert fields["cs1Label"] == "rules"


@pytest.mark.parametrize("filler", ["\\", "=", "|", "\n", "é", "\U0001f600", "a\\=\n|"])
@pytest.mark.parametrize("max_bytes", [8192, 1500])
def test_cef_huge_values_are_cut_between_escapes_to_fit(filler: str, max_bytes: int) -> None:
    huge = (filler * BIG)[:BIG]
    hostile = event(type=huge, host=huge, user=huge, path=huge, vendor=huge, matches=[{"rule": huge}])
    line = format_cef(hostile, product_version=VERSION, max_bytes=max_bytes)
    header, fields = parse_cef(line)

    assert len(line.encode()) <= max_bytes
    assert cleaned_header(huge).startswith(header[4]) and header[4]
    for key in ("dhost", "duser", "filePath", "cs1", "cs2"):
        assert cleaned(huge).startswith(fields[key]) and fields[key], key
    # Short values are not sacrificed to long ones.
    assert fields["externalId"] == EVENT["id"]
    assert fields["cs4"] == "SanDisk Ultra 4C530001"
    assert fields["fsize"] == "20480"


def test_cef_refuses_a_bound_too_small_for_its_keys() -> None:
    with pytest.raises(ValueError):
        format_cef(EVENT, product_version=VERSION, max_bytes=100)


# --- syslog format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "severity, pri",
    [("critical", 106), ("high", 107), ("medium", 108), ("low", 109), (None, 110), ("bogus", 110)],
)
def test_rfc5424_priority_is_log_audit_plus_severity(severity: str | None, pri: int) -> None:
    line = format_rfc5424("m", hostname="h", msgid="id", severity=severity)
    assert line.startswith(b"<%d>1 " % pri)


def test_rfc5424_header_fields_are_printable_ascii_within_limits() -> None:
    naive = dt.datetime(2026, 11, 24, 9, 12, 3, 412000)
    local = dt.datetime(2026, 11, 24, 10, 12, 3, 412000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    line = format_rfc5424(
        "café | x=1\n", hostname="ws 017\u00e9" + "h" * 300, app_name="a" * 60, msgid="usb.write " + "m" * 40,
        severity="high", timestamp=naive, facility=4, procid="",
    )  # fmt: skip

    header, message = line.split(b"\xef\xbb\xbf", 1)
    pri_version, stamp, host, app, procid, msgid, data = header.decode("ascii").rstrip(" ").split(" ")
    assert (pri_version, stamp) == ("<35>1", "2026-11-24T09:12:03.412000Z")
    assert host == ("ws017" + "h" * 300)[:255]
    assert app == "a" * 48
    assert (procid, msgid, data) == ("-", ("usb.write" + "m" * 40)[:32], "-")
    assert message.decode("utf-8") == "café | x=1\n"
    assert (
        format_rfc5424("m", hostname="h", msgid="i", severity=None, timestamp=local).split(b" ")[1]
        == b"2026-11-24T09:12:03.412000Z"
    )


def test_rfc5424_uses_nilvalues_and_rejects_bad_facility() -> None:
    assert format_rfc5424("", hostname="", msgid="", severity=None, app_name="") == b"<110>1 - - - - - -"
    with pytest.raises(ValueError):
        format_rfc5424("m", hostname="h", msgid="i", severity=None, facility=24)


# --- syslog over real sockets --------------------------------------------------------------------

SYSLOG_LINE = re.compile(rb"<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) - \xef\xbb\xbf(.*)", re.DOTALL)


def read_syslog(message: bytes) -> tuple[int, str, str, str, str, dict[str, str], list[str]]:
    """PRI, timestamp, hostname, app, msgid, CEF extension and header of one syslog message."""
    match = SYSLOG_LINE.fullmatch(message)
    assert match, message[:200]
    pri, stamp, host, app, _, msgid, body = match.groups()
    header, fields = parse_cef(body.decode("utf-8"))
    return int(pri), stamp.decode(), host.decode(), app.decode(), msgid.decode(), fields, header


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """RFC 6587 octet counting: ``<length> <message>`` repeated; returns whole frames and the rest."""
    frames = []
    while (space := buffer.find(b" ")) > 0:
        assert buffer[:space].isdigit(), f"bad frame header {buffer[:20]!r}"
        end = space + 1 + int(buffer[:space])
        if len(buffer) < end:
            break
        frames.append(buffer[space + 1 : end])
        buffer = buffer[end:]
    return frames, buffer


class StreamReceiver:
    """A syslog receiver on 127.0.0.1 handling one connection at a time, optionally over TLS.

    Frames (or the exception a malformed stream raised) go to ``messages``; with
    ``hang_up_after`` it closes each connection after that many frames and sets ``hung_up``.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, hang_up_after: int | None = None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.messages: queue.Queue[bytes | Exception] = queue.Queue()
        self.connections = 0
        self.hung_up = threading.Event()
        self._tls = tls
        self._hang_up_after = hang_up_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-syslog-receiver", daemon=True)
        self._thread.start()

    def get(self) -> bytes:
        item = self.messages.get(timeout=WAIT)
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                try:
                    self._read(self._tls.wrap_socket(conn, server_side=True) if self._tls else conn)
                except ssl.SSLError:
                    continue  # a client that rejected our certificate
                except Exception as exc:  # noqa: BLE001 - hand the failure to the test instead of dying quietly
                    self.messages.put(exc)

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        buffer, received = b"", 0
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                frames, buffer = split_frames(buffer + chunk)
                for frame in frames:
                    self.messages.put(frame)
                    received += 1
                    if received == self._hang_up_after:
                        conn.close()
                        self.hung_up.set()
                        return


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_for(lambda: not set(threading.enumerate()) - before, timeout=WAIT, message="test threads to end")


@pytest.fixture
def receivers() -> Iterator[list[StreamReceiver]]:
    started: list[StreamReceiver] = []
    yield started
    for receiver in started:
        receiver.stop()


def stream_receiver(receivers: list[StreamReceiver], **kwargs: Any) -> StreamReceiver:
    receiver = StreamReceiver(**kwargs)
    receivers.append(receiver)
    return receiver


def fixed_clock() -> dt.datetime:
    return NOW


def test_udp_sends_one_datagram_per_event() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inbox:
        inbox.bind(("127.0.0.1", 0))
        inbox.settimeout(WAIT)
        with SyslogSender("127.0.0.1", inbox.getsockname()[1], hostname="collector-1", clock=fixed_clock) as sender:
            sender.send(EVENT, product_version=VERSION)
            sender.send(event(severity=None, host=HOSTILE, type="usb.mount"), product_version=VERSION)
            first, second = inbox.recv(65535), inbox.recv(65535)

    pri, stamp, host, app, msgid, fields, header = read_syslog(first)
    assert (pri, stamp, host, app, msgid) == (
        106,
        "2026-11-24T09:12:05.250000Z",
        "collector-1",
        "dlp-server",
        "usb.write",
    )
    assert fields["dhost"] == "vendor-ws-017" and header[5] == "usb.write matched private_key_pem (+2 more)"
    pri, _, _, _, msgid, fields, _ = read_syslog(second)
    assert (pri, msgid, fields["dhost"]) == (110, "usb.mount", cleaned(HOSTILE))


def test_udp_datagram_of_a_huge_event_stays_within_8k() -> None:
    huge = "\\=|\n" * BIG
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inbox:
        inbox.bind(("127.0.0.1", 0))
        inbox.settimeout(WAIT)
        with SyslogSender("127.0.0.1", inbox.getsockname()[1], hostname="h" * 300, clock=fixed_clock) as sender:
            sender.send(event(host=huge, path=huge, type=huge), product_version=VERSION)
            datagram = inbox.recv(65535)

    assert len(datagram) <= 8192
    _, _, _, _, _, fields, _ = read_syslog(datagram)
    assert huge.startswith(fields["dhost"]) and fields["externalId"] == EVENT["id"]


def test_tcp_frames_events_on_one_connection(receivers: list[StreamReceiver]) -> None:
    receiver = stream_receiver(receivers)
    huge = "\n" * BIG
    with SyslogSender("127.0.0.1", receiver.port, protocol="tcp", hostname="c1", clock=fixed_clock) as sender:
        sender.send(EVENT, product_version=VERSION)
        sender.send(event(path=huge, severity="low"), product_version=VERSION)
        sender.send(event(user=HOSTILE), product_version=VERSION)
        messages = [receiver.get() for _ in range(3)]

    assert receiver.connections == 1
    assert [read_syslog(m)[0] for m in messages] == [106, 109, 106]
    assert huge.startswith(read_syslog(messages[1])[5]["filePath"]) and len(messages[1]) <= 8192
    assert read_syslog(messages[2])[5]["duser"] == cleaned(HOSTILE)


def test_tcp_reconnects_once_when_the_receiver_hung_up(receivers: list[StreamReceiver]) -> None:
    receiver = stream_receiver(receivers, hang_up_after=1)
    with SyslogSender("127.0.0.1", receiver.port, protocol="tcp", clock=fixed_clock) as sender:
        sender.send(event(id="first"), product_version=VERSION)
        assert read_syslog(receiver.get())[5]["externalId"] == "first"
        assert receiver.hung_up.wait(WAIT)
        sender.send(event(id="second"), product_version=VERSION)
        assert read_syslog(receiver.get())[5]["externalId"] == "second"

    assert receiver.connections == 2


def test_tcp_is_safe_to_share_between_threads(receivers: list[StreamReceiver]) -> None:
    receiver = stream_receiver(receivers)
    with SyslogSender("127.0.0.1", receiver.port, protocol="tcp", clock=fixed_clock) as sender:

        def burst(worker: int) -> None:
            for n in range(25):
                sender.send(event(id=f"{worker}-{n}", path="x" * 3000), product_version=VERSION)

        workers = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT)
        ids = {read_syslog(receiver.get())[5]["externalId"] for _ in range(100)}

    assert ids == {f"{w}-{n}" for w in range(4) for n in range(25)}
    assert receiver.connections == 1


def test_tcp_unreachable_receiver_is_a_delivery_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with (
        SyslogSender("127.0.0.1", port, protocol="tcp") as sender,
        pytest.raises(DeliveryError, match=f"tcp://127.0.0.1:{port}"),
    ):
        sender.send(EVENT, product_version=VERSION)


def test_settings_are_checked_before_any_send(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SyslogSender("127.0.0.1", 514, protocol="http")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SyslogSender("127.0.0.1", 514, protocol="tcp", ca_file=str(tmp_path / "ca.pem"))
    with pytest.raises(ValueError):
        SyslogSender("127.0.0.1", 6514, protocol="tls", ca_file=str(tmp_path / "missing.pem"))


# --- syslog over TLS -----------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, made by the openssl command."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


Certificates = dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificates")
    directory = tmp_path_factory.mktemp("tls")
    return {name: self_signed(directory, name) for name in ("server", "stranger")}


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_tls_delivers_to_a_receiver_the_ca_file_vouches_for(
    certificates: Certificates, receivers: list[StreamReceiver]
) -> None:
    cert, key = certificates["server"]
    receiver = stream_receiver(receivers, tls=server_context(cert, key), hang_up_after=1)
    with SyslogSender("127.0.0.1", receiver.port, protocol="tls", ca_file=str(cert), clock=fixed_clock) as sender:
        sender.send(event(id="over-tls"), product_version=VERSION)
        assert read_syslog(receiver.get())[5]["externalId"] == "over-tls"
        assert receiver.hung_up.wait(WAIT)
        sender.send(event(id="after-reconnect"), product_version=VERSION)
        assert read_syslog(receiver.get())[5]["externalId"] == "after-reconnect"


def test_tls_refuses_a_receiver_the_ca_file_does_not_vouch_for(
    certificates: Certificates, receivers: list[StreamReceiver]
) -> None:
    receiver = stream_receiver(receivers, tls=server_context(*certificates["server"]))
    stranger, _ = certificates["stranger"]
    with (
        SyslogSender("127.0.0.1", receiver.port, protocol="tls", ca_file=str(stranger)) as sender,
        pytest.raises(DeliveryError, match="certificate verify failed"),
    ):
        sender.send(EVENT, product_version=VERSION)


# --- webhook against a real HTTP server ----------------------------------------------------------

SECRET = "hook-secret-Zq81"
TOKEN = "Bearer tok-5531"
PATH_SECRET = "T0KEN-IN-PATH"


class HookHandler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /ok 204, /fail 500, /moved 302 to /ok, /slow never (until the test ends)."""

    server: HookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.put((self.path, dict(self.headers), body))
        if self.path.startswith("/ok"):
            self.send_response(204)
            self.end_headers()
        elif self.path.startswith("/fail"):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/slow"):
            self.server.release.wait(WAIT)

    def log_message(self, *args: Any) -> None:
        """Keep the test output quiet."""


class HookServer(http.server.ThreadingHTTPServer):
    """The receiver: every request's (path, headers, body) lands in ``requests``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HookHandler)
        self.requests: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
        self.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[HookServer]:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    server = HookServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-hook")
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


def test_webhook_posts_a_signed_event(hook: HookServer) -> None:
    with WebhookSender(f"{hook.url}/ok", secret=SECRET, headers={"Authorization": TOKEN}) as sender:
        sender.send(event(user=HOSTILE, path="\udc80lone"), product_version=VERSION)

    path, headers, body = hook.requests.get(timeout=WAIT)
    assert path == "/ok"
    assert json.loads(body) == {
        "event": event(user=HOSTILE, path="\udc80lone"),
        "product": "dlp-endpoint",
        "version": VERSION,
    }
    assert headers["Content-Type"] == "application/json" and headers["Authorization"] == TOKEN
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-DLP-Signature"], f"sha256={expected}")


def test_webhook_without_secret_sends_no_signature(hook: HookServer) -> None:
    with WebhookSender(f"{hook.url}/ok") as sender:
        sender.send(EVENT, product_version=VERSION)

    _, headers, _ = hook.requests.get(timeout=WAIT)
    assert "X-DLP-Signature" not in headers


def test_webhook_error_status_is_a_delivery_error_without_secrets(hook: HookServer) -> None:
    with (
        WebhookSender(f"{hook.url}/fail/{PATH_SECRET}", secret=SECRET, headers={"Authorization": TOKEN}) as sender,
        pytest.raises(DeliveryError, match="500") as caught,
    ):
        sender.send(EVENT, product_version=VERSION)

    assert all(s not in str(caught.value) for s in (SECRET, TOKEN, PATH_SECRET))


def test_webhook_does_not_follow_redirects(hook: HookServer) -> None:
    with WebhookSender(f"{hook.url}/moved", secret=SECRET) as sender, pytest.raises(DeliveryError, match="302"):
        sender.send(EVENT, product_version=VERSION)

    assert hook.requests.get(timeout=WAIT)[0] == "/moved"
    assert hook.requests.empty()


def test_webhook_timeout_is_a_delivery_error(hook: HookServer) -> None:
    with WebhookSender(f"{hook.url}/slow", timeout=0.2) as sender, pytest.raises(DeliveryError, match="no answer"):
        sender.send(EVENT, product_version=VERSION)


def test_webhook_unreachable_is_a_delivery_error_without_the_path() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with (
        WebhookSender(f"http://127.0.0.1:{port}/hooks/{PATH_SECRET}") as sender,
        pytest.raises(DeliveryError) as caught,
    ):
        sender.send(EVENT, product_version=VERSION)

    assert PATH_SECRET not in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_webhook_settings_are_checked_up_front(tmp_path: Path) -> None:
    for url in ("ftp://example.test/x", "http:///nohost", "not a url"):
        with pytest.raises(ValueError):
            WebhookSender(url)
    with pytest.raises(ValueError):
        WebhookSender("https://example.test/x", secret="")
    with pytest.raises(ValueError):
        WebhookSender("https://example.test/x", ca_file=str(tmp_path / "missing.pem"))


# --- export --------------------------------------------------------------------------------------

WEIRD = 'line\nbreak\u2028sep\u2029para\x85nel\x1cfs\x00nul\udc80lone "quote" ,comma é'


@pytest.mark.parametrize("target", ["memory", "file"])
def test_jsonl_round_trips_every_value(tmp_path: Path, target: str) -> None:
    events = [EVENT, event(user=WEIRD, path=WEIRD, matches=[{"rule": WEIRD}]), {"id": "3", "type": "t", "channel": "c"}]
    if target == "memory":
        out = io.StringIO()
        assert write_events(iter(events), out, fmt="jsonl", product_version=VERSION) == 3
        text = out.getvalue()
    else:
        path = tmp_path / "events.jsonl"
        with path.open("w", encoding="utf-8") as out:
            assert write_events(iter(events), out, fmt="jsonl", product_version=VERSION) == 3
        text = path.read_text(encoding="utf-8")

    assert len(text.splitlines()) == 3 and text.endswith("\n")
    assert [json.loads(line) for line in text.splitlines()] == events
    assert '": ' not in text.splitlines()[0] and "é" in text


def test_csv_has_fixed_columns_and_derived_fields() -> None:
    out = io.StringIO(newline="")
    assert (
        write_events(
            [EVENT, {"id": "2", "type": "usb.mount", "channel": "usb"}], out, fmt="csv", product_version=VERSION
        )
        == 2
    )
    header, full, sparse = csv.reader(io.StringIO(out.getvalue(), newline=""))

    assert tuple(header) == CSV_COLUMNS
    row = dict(zip(header, full))
    assert row["seq"] == "42" and row["size"] == "20480" and row["triage_status"] == "new"
    assert row["rules"] == "private_key_pem;aws_access_key;customer_marking"
    assert row["device"] == "SanDisk Ultra 4C530001"
    assert row["received_at"] == EVENT["received_at"] and row["source_country"] == "NL"
    assert dict(zip(header, sparse)) == dict.fromkeys(CSV_COLUMNS, "") | {
        "id": "2",
        "type": "usb.mount",
        "channel": "usb",
    }


@pytest.mark.parametrize(
    "value, shown",
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\tplain", "'\tplain"),
        ("\rplain", "'\rplain"),
        (" =cmd|' /C calc'!A0", "' =cmd|' /C calc'!A0"),
        ("\n@SUM(A1)", "'\n@SUM(A1)"),
        (" \t\r\n+1", "' \t\r\n+1"),
        ("\u00a0\u3000-1", "'\u00a0\u3000-1"),
        ("a=b", "a=b"),
        ("\nplain", "\nplain"),
        ('plain, "quoted"\nnext line', 'plain, "quoted"\nnext line'),
        ("nul\x00kept\udc80", "nul<U+0000>kept<U+DC80>"),
        ("invoice\u202egpj.exe", "invoice<U+202E>gpj.exe"),
        ("\x1b[2J\x9b31m\x07\x08", "<U+001B>[2J<U+009B>31m<U+0007><U+0008>"),
    ],
)
def test_csv_cells_cannot_become_formulas(value: str, shown: str) -> None:
    out = io.StringIO(newline="")
    write_events([event(user=value, host=value, matches=[{"rule": value}])], out, fmt="csv", product_version=VERSION)
    row = dict(zip(CSV_COLUMNS, list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1]))

    assert row["user"] == shown and row["host"] == shown and row["rules"] == shown


@pytest.mark.parametrize(
    "value, shown",
    [
        ("ws\x1b]0;owned\x07", "ws<U+001B>]0;owned<U+0007>"),
        ("a\rb\nc\td", "a<U+000D>b<U+000A>c<U+0009>d"),
        ("\t=1", "<U+0009>=1"),
        ("\n@SUM(A1)", "<U+000A>@SUM(A1)"),
        (" =1", "' =1"),
    ],
)
def test_csv_for_a_terminal_keeps_no_control_character_raw(value: str, shown: str) -> None:
    out = io.StringIO(newline="")
    write_events([event(user=value, host=value)], out, fmt="csv", product_version=VERSION, terminal=True)
    text = out.getvalue()
    row = dict(zip(CSV_COLUMNS, list(csv.reader(io.StringIO(text, newline="")))[1]))

    assert row["user"] == shown and row["host"] == shown
    assert re.search("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]", text) is None and text.count("\n") == 2


def test_jsonl_writes_bidi_and_terminal_controls_as_escapes() -> None:
    hostile = event(path="invoice\u202egpj.exe", host="ws\x1b[2J\x9b31m\x7f", user="\u2066\u200e\u061c")
    out = io.StringIO()
    write_events([hostile], out, fmt="jsonl", product_version=VERSION)
    line = out.getvalue()

    assert re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", line) is None
    assert "invoice\\u202egpj.exe" in line and "\\u009b" in line and "\\u001b" in line
    assert json.loads(line) == hostile


def test_cef_shows_bidi_controls_as_visible_marks() -> None:
    header, fields = parse_cef(format_cef(event(type="t\u202e", path="invoice\u202egpj.exe", host="ws\u2066-1"), product_version=VERSION))

    assert fields["filePath"] == "invoice<U+202E>gpj.exe" and fields["dhost"] == "ws<U+2066>-1"
    assert header[4] == "t<U+202E>"


def test_cef_export_writes_one_parsable_line_per_event() -> None:
    out = io.StringIO()
    events = [EVENT, event(host=HOSTILE, path="\\" * BIG)]
    assert write_events(events, out, fmt="cef", product_version=VERSION) == 2

    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert [parse_cef(line)[1]["dhost"] for line in lines[:2]] == ["vendor-ws-017", cleaned(HOSTILE)]


@pytest.mark.parametrize("fmt, leading_lines", [("jsonl", 0), ("csv", 1), ("cef", 0)])
def test_export_streams_each_event_before_reading_the_next(fmt: str, leading_lines: int) -> None:
    out = io.StringIO(newline="")
    written_when_asked: list[int] = []

    def events() -> Iterator[dict[str, Any]]:
        for n in range(3):
            written_when_asked.append(out.getvalue().count("\n") - leading_lines)
            yield event(id=str(n))

    assert write_events(events(), out, fmt=fmt, product_version=VERSION) == 3  # type: ignore[arg-type]
    assert written_when_asked == [0, 1, 2]


def test_export_rejects_an_unknown_format() -> None:
    out = io.StringIO()
    with pytest.raises(ValueError):
        write_events([EVENT], out, fmt="xml", product_version=VERSION)  # type: ignore[arg-type]
    assert out.getvalue() == ""


# --- the writer or clipboard owner, and what enforcement did ------------------------------------

PROCESS = {
    "pid": 4242, "exe": "/usr/bin/cp", "cmdline": "cp -r src /media/jdoe/STICK", "uid": 1000, "user": "jdoe", "ppid": 4200,
    "parents": [{"pid": 4200, "exe": "/usr/bin/bash", "cmdline": "bash", "uid": 1000, "user": "jdoe", "ppid": 1}],
}  # fmt: skip
ENFORCED = {"action": "quarantine", "mode": "enforce", "done": True, "detail": "moved off the volume", "quarantine": {"id": "x"}}


def test_cef_carries_the_process_and_the_enforcement_action() -> None:
    _, fields = parse_cef(format_cef(event(process=PROCESS, enforcement=ENFORCED), product_version=VERSION))
    assert {key: fields[key] for key in ("sproc", "spid", "suser", "suid", "flexString2Label", "flexString2", "act", "outcome")} == {
        "sproc": "/usr/bin/cp", "spid": "4242", "suser": "jdoe", "suid": "1000", "flexString2Label": "processCommandLine",
        "flexString2": "cp -r src /media/jdoe/STICK", "act": "quarantine", "outcome": "done",
    }  # fmt: skip
    _, audit = parse_cef(format_cef(event(enforcement={"action": "clear", "mode": "audit", "done": False}), product_version=VERSION))
    assert (audit["act"], audit["outcome"]) == ("clear", "audit") and "sproc" not in audit


def test_cef_process_fields_from_a_hostile_agent_read_back_cleaned() -> None:
    hostile = {"pid": "4242 act=block", "exe": HOSTILE, "cmdline": HOSTILE * 3, "uid": True, "user": HOSTILE, "parents": HOSTILE}
    _, fields = parse_cef(format_cef(event(process=hostile, enforcement={"action": HOSTILE, "mode": "x"}), product_version=VERSION))
    assert fields["sproc"] == fields["suser"] == fields["act"] == cleaned(HOSTILE)
    assert fields["flexString2"] == cleaned(HOSTILE * 3)
    assert "spid" not in fields and "suid" not in fields  # typed CEF fields take integers only
    assert fields["outcome"] == "not done"


def test_csv_carries_the_process_and_enforcement_and_defuses_a_hostile_command_line() -> None:
    out = io.StringIO(newline="")
    hostile = {"pid": 7, "exe": "=cmd|' /C calc'!A0", "cmdline": "@SUM(A1)\nsecond\u202eline\x1b[2J", "user": "+jdoe"}
    write_events([event(process=PROCESS, enforcement=ENFORCED), event(process=hostile)], out, fmt="csv", product_version=VERSION)
    _, plain, bad = (dict(zip(CSV_COLUMNS, row)) for row in csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert (plain["process_exe"], plain["process_pid"], plain["process_cmdline"], plain["process_user"]) == (
        "/usr/bin/cp", "4242", "cp -r src /media/jdoe/STICK", "jdoe",
    )
    assert (plain["enforcement_action"], plain["enforcement_outcome"]) == ("quarantine", "done")
    assert bad["process_exe"] == "'=cmd|' /C calc'!A0" and bad["process_user"] == "'+jdoe"
    assert bad["process_cmdline"] == "'@SUM(A1)\nsecond<U+202E>line<U+001B>[2J"
    assert bad["enforcement_action"] == bad["enforcement_outcome"] == ""
