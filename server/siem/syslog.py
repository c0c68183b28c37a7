"""RFC 5424 syslog messages, and a sender of CEF events over UDP, TCP or TLS.

Transports: UDP is RFC 5426 (one message per datagram); TCP and TLS are RFC 6587
octet counting (``<length> <message>``), the framing RFC 5425 mandates for TLS and
the only one that survives newlines in a message.

Every message the sender builds is at most 8192 bytes, the size RFC 5425 asks TLS
receivers to accept; UDP uses the same bound (RFC 5426 only guarantees 480, and asks
for 2048, but a cut alert is worse than one a small receiver drops, and common
receivers take 8 KiB). The CEF line inside is built to fit, so the cut falls between
characters of the longest fields rather than through the end of the line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import re
import socket
import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Self

from agent.events import SEVERITIES
from server.siem.cef import format_cef
from server.siem.errors import DeliveryError
from server.siem.fields import text

# "log audit": DLP alerts are audit records of what left a workstation. Receivers that file
# security messages elsewhere can be given another facility (10, authpriv, or 16-23, local0-7).
FACILITY_LOG_AUDIT = 13
MAX_MESSAGE_BYTES = 8192

_SEVERITY: dict[str, int] = dict(zip(SEVERITIES, (5, 4, 3, 2)))
# Events without a severity (mounts, clean writes) and unknown values are informational.
_INFORMATIONAL = 6
_NILVALUE = "-"
_BOM = b"\xef\xbb\xbf"
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
# RFC 5424 section 6: maximum lengths of the header fields.
_HOSTNAME_CHARS = 255
_APP_NAME_CHARS = 48
_PROCID_CHARS = 128
_MSGID_CHARS = 32

Protocol = Literal["udp", "tcp", "tls"]


def format_rfc5424(
    message: str,
    *,
    hostname: str,
    app_name: str = "dlp-server",
    msgid: str,
    severity: str | None,
    timestamp: dt.datetime | None = None,
    facility: int = FACILITY_LOG_AUDIT,
    procid: str | None = None,
) -> bytes:
    """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG``.

    Header fields keep only printable US-ASCII (other characters are dropped) up to
    their RFC length; an empty or missing field is the NILVALUE ``-``, and so is a
    missing timestamp. Naive timestamps are taken as UTC. The message is UTF-8 after
    a BOM, as RFC 5424 asks for UTF-8 text; an empty message is left out.

    Raises:
        ValueError: ``facility`` is not one of syslog's 0-23.
    """
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility must be 0-23, not {facility}")
    level = _SEVERITY.get(severity, _INFORMATIONAL) if isinstance(severity, str) else _INFORMATIONAL
    fields = [
        f"<{facility * 8 + level}>1",
        _timestamp(timestamp),
        _header_field(hostname, _HOSTNAME_CHARS),
        _header_field(app_name, _APP_NAME_CHARS),
        _header_field(procid, _PROCID_CHARS),
        _header_field(msgid, _MSGID_CHARS),
        _NILVALUE,  # no structured data: everything is in the CEF message
    ]
    header = " ".join(fields).encode("ascii")
    if not message:
        return header
    # Lone surrogates (legal in JSON, not in UTF-8) become "?" rather than failing the alert.
    return header + b" " + _BOM + message.encode("utf-8", "replace")


def _timestamp(moment: dt.datetime | None) -> str:
    if moment is None:
        return _NILVALUE
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    utc = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _header_field(value: str | None, limit: int) -> str:
    return _NOT_PRINTUSASCII.sub("", value or "")[:limit] or _NILVALUE


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SyslogSender:
    """Sends events as CEF in RFC 5424 syslog to one receiver.

    TCP and TLS keep one connection open across sends and reconnect once when it
    turns out broken. Syslog has no acknowledgements: a message written just as the
    receiver goes away can be lost without an error, which is why the sender checks
    for a closed connection before each reuse. Safe to share between threads.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: Protocol = "udp",
        timeout: float = 5.0,
        ca_file: str | None = None,
        hostname: str | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ):
        """Check the settings; nothing touches the network until the first send.

        Args:
            hostname: the HOSTNAME field; defaults to this machine's name.
            ca_file: PEM certificates to verify the TLS receiver against, instead of the system store.
            clock: the source of message timestamps, replaceable in tests.

        Raises:
            ValueError: an unknown protocol, a CA file for a protocol without TLS, or a CA file that cannot be loaded.
        """
        if protocol not in ("udp", "tcp", "tls"):
            raise ValueError(f"syslog protocol must be udp, tcp or tls, not {protocol!r}")
        if ca_file is not None and protocol != "tls":
            raise ValueError(f"ca_file only applies to the tls protocol, not {protocol}")
        self._host = host
        self._port = port
        self._protocol = protocol
        self._timeout = timeout
        self._tls = _tls_context(ca_file) if protocol == "tls" else None
        self._hostname = hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._clock = clock
        self._destination = f"syslog {protocol}://{host}:{port}"
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._udp_address: Any = None

    def send(self, event: dict[str, Any], *, product_version: str) -> None:
        """Send one event; return once the operating system has taken the message.

        Raises:
            DeliveryError: the receiver could not be resolved, reached or written to.
        """
        message = self._message(event, product_version)
        with self._lock:
            if self._protocol == "udp":
                self._send_datagram(message)
            else:
                self._send_framed(b"%d " % len(message) + message)

    def close(self) -> None:
        """Close the connection; a later send opens a new one."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _message(self, event: dict[str, Any], product_version: str) -> bytes:
        frame = functools.partial(
            format_rfc5424,
            hostname=self._hostname,
            msgid=text(event.get("type")) or "",
            severity=text(event.get("severity")),
            timestamp=self._clock(),
            procid=self._procid,
        )
        budget = MAX_MESSAGE_BYTES - len(frame("")) - len(b" " + _BOM)
        return frame(format_cef(event, product_version=product_version, max_bytes=budget))

    def _send_datagram(self, message: bytes) -> None:
        try:
            if self._sock is None:
                family, kind, proto, _, address = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM)[0]
                self._sock = socket.socket(family, kind, proto)
                self._sock.settimeout(self._timeout)
                self._udp_address = address
            self._sock.sendto(message, self._udp_address)
        except (OSError, UnicodeError) as exc:
            self._drop()
            raise DeliveryError(f"{self._destination}: {exc}") from exc

    def _send_framed(self, frame: bytes) -> None:
        if self._sock is not None and _peer_closed(self._sock, self._timeout):
            self._drop()
        if self._sock is not None:
            try:
                self._sock.sendall(frame)
                return
            except OSError:
                # Broken since the last send (receiver restarted, idle timeout): worth one fresh connection.
                self._drop()
        try:
            self._sock = self._connect()
            self._sock.sendall(frame)
        except (OSError, UnicodeError) as exc:
            self._drop()
            raise DeliveryError(f"{self._destination}: {exc}") from exc

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        if self._tls is None:
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=self._host)
        except OSError:
            sock.close()
            raise

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context: certificate and host name checks, TLS 1.2 or later."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:
        raise ValueError(f"cannot load CA certificates from {ca_file}: {exc}") from exc


def _peer_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the receiver has closed or reset the connection since the last send.

    Syslog receivers never send application data, so anything to read means end of
    file, a reset, or TLS housekeeping (TLS 1.3 session tickets) that leaves the
    connection usable. A non-blocking read tells these apart without waiting (and,
    unlike select(), works for any descriptor number); stray data is discarded.
    """
    sock.setblocking(False)
    try:
        return not sock.recv(4096)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)
