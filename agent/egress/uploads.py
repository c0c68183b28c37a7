"""What an upload tool is about to send: scp, sftp, rsync, curl, wget and rclone read from argv.

Pure functions on a process's argv and working folder like agent/egress/commands.py; the only I/O
is reading an sftp batch file, at most MAX_BATCH bytes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Sequence

from agent.egress.argv import MAX_ARGS, Options, base, join, split_command, usable
from agent.egress.remotes import Destination, parse_url

MAX_BATCH = 64 << 10


@dataclasses.dataclass(frozen=True)
class UploadIntent:
    """Local files (absolute) an upload tool names and where they go."""

    tool: str
    files: tuple[str, ...]
    destination: Destination


def upload_intent(argv: Sequence[str], cwd: str | None, *, tools: Collection[str]) -> UploadIntent | None:
    """The local files an upload tool sends and where, or None (downloads, local copies, no files named)."""
    if not usable(argv):
        return None
    name = base(argv[0])
    if name not in tools:
        return None
    reader = _READERS.get(name)
    if reader is None:
        return None
    try:
        intent = reader(argv[1:], cwd)
    except ValueError:
        return None
    if intent is None or not intent.files:
        return None
    return intent


def _remote_operand(arg: str) -> bool:
    """Whether scp, sftp and rsync read this operand as remote (``host:path``, a scheme URL)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", arg) is not None or re.match(r"^(?:[^/@\[]*@)?(?:\[[^\]/]*\]|[^/:@\[]+):", arg) is not None


def _files(paths: Sequence[str], cwd: str | None) -> tuple[str, ...]:
    """The named files made absolute, each once, in order (``-`` is stdin, and dropped)."""
    found: dict[str, None] = {}
    for path in paths:
        if path != "-":
            full = join(cwd, path)
            if full is not None:
                found[full] = None
    return tuple(found)


_SCP = Options("cFiJloPSDX", ())


def _scp(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, operands = _SCP.scan(args)
    if any(name == "-3" for name, _ in options) or len(operands) < 2:
        return None
    target, sources = operands[-1], operands[:-1]
    if not _remote_operand(target) or any(_remote_operand(source) for source in sources):
        return None
    port = next((value for name, value in options if name == "-P" and value), None)
    destination = _scp_like("scp", "scp", target, port)
    return UploadIntent("scp", _files(sources, cwd), destination)


def _scp_like(tool: str, transport: str, target: str, port: str | None) -> Destination:
    if "://" in target:
        parsed = parse_url(target, tool=tool)
        return dataclasses.replace(parsed, transport=transport) if parsed.port is not None or port is None else _with_port(parsed, transport, port)
    parsed = parse_url(target, tool=tool, scp_like=True)
    if parsed.host is None:
        raise ValueError("not a remote operand")
    return _with_port(parsed, transport, port) if port else dataclasses.replace(parsed, transport=transport)


def _with_port(parsed: Destination, transport: str, port: str) -> Destination:
    if not port.isascii() or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ValueError("bad port")
    return dataclasses.replace(parsed, transport=transport, port=int(port))


_SFTP = Options("BbcDFiJloPRSsX", ())


def _sftp(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, operands = _SFTP.scan(args)
    if not operands:
        return None
    port = next((value for name, value in options if name == "-P" and value), None)
    batch = next((value for name, value in options if name == "-b" and value), None)
    target = operands[-1]
    if "://" not in target and ":" not in target:
        target += ":"
    destination = _scp_like("sftp", "sftp", target, port)
    if batch is None or batch == "-":
        return None
    return UploadIntent("sftp", _batch_puts(batch, cwd), destination)


def _batch_puts(batch: str, cwd: str | None) -> tuple[str, ...]:
    """The local files an sftp batch file's put/mput/reput lines send (``lcd`` followed)."""
    path = join(cwd, batch)
    if path is None:
        return ()
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_BATCH).decode("utf-8", "replace")
    except OSError:
        return ()
    local = cwd
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip().lstrip("-@").strip()
        if not line or line.startswith("#"):
            continue
        words = split_command(line)
        if not words:
            continue
        command, rest = words[0].lower(), [word for word in words[1:] if not word.startswith("-")]
        if command == "lcd" and rest:
            local = join(local, rest[0])
        elif command in ("put", "mput", "reput") and rest:
            sources = rest if command == "mput" else rest[:1]
            found.extend(_files(sources, local))
    return tuple(dict.fromkeys(found))


_RSYNC = Options(
    "efBTM@",
    {
        "rsh", "rsync-path", "exclude", "include", "exclude-from", "include-from", "files-from", "filter", "max-size", "min-size", "max-delete",
        "max-alloc", "partial-dir", "temp-dir", "compare-dest", "copy-dest", "link-dest", "suffix", "backup-dir", "chmod", "chown", "usermap",
        "groupmap", "timeout", "contimeout", "address", "port", "sockopts", "log-file", "log-file-format", "out-format", "password-file",
        "bwlimit", "stop-after", "stop-at", "write-batch", "only-write-batch", "read-batch", "protocol", "iconv", "checksum-choice",
        "compress-choice", "compress-level", "skip-compress", "outbuf", "info", "debug", "block-size", "remote-option", "modify-window",
        "checksum-seed", "early-input", "copy-as", "config", "dparam",
    },
)  # fmt: skip


def _rsync(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, operands = _RSYNC.scan(args)
    if len(operands) < 2:
        return None
    target, sources = operands[-1], operands[:-1]
    if any(_remote_operand(source) or "::" in source for source in sources):
        return None
    values = dict((name, value) for name, value in options if value is not None)
    if target.startswith("rsync://"):
        destination = parse_url(target, tool="rsync")
        if destination.port is None and values.get("--port"):
            destination = _with_port(destination, "rsync", values["--port"])
    elif re.match(r"^(?:[^/@\[]*@)?[^/:@\[]+::", target):
        host, _, module = target.partition("::")
        destination = parse_url(f"rsync://{host}/{module}", tool="rsync")
        if values.get("--port"):
            destination = _with_port(destination, "rsync", values["--port"])
    elif _remote_operand(target):
        rsh = values.get("-e") or values.get("--rsh") or ""
        words = split_command(rsh)
        port = next((words[i + 1] for i in range(len(words) - 1) if words[i] == "-p"), None)
        destination = _scp_like("rsync", "ssh", target, port)
    else:
        return None
    return UploadIntent("rsync", _files(sources, cwd), destination)


_CURL = Options(
    "EKCbcdDFPHhmoxUQreXYytzTuAw",
    {
        "abstract-unix-socket", "alt-svc", "aws-sigv4", "cacert", "capath", "cert", "cert-type", "ciphers", "config", "connect-timeout",
        "connect-to", "continue-at", "cookie", "cookie-jar", "create-file-mode", "crlfile", "curves", "data", "data-ascii", "data-binary",
        "data-raw", "data-urlencode", "delegation", "dns-interface", "dns-ipv4-addr", "dns-ipv6-addr", "dns-servers", "doh-url",
        "dump-header", "egd-file", "engine", "etag-compare", "etag-save", "expect100-timeout", "form", "form-string", "ftp-account",
        "ftp-alternative-to-user", "ftp-method", "ftp-port", "ftp-ssl-ccc-mode", "happy-eyeballs-timeout-ms", "header", "help", "hostpubmd5",
        "hostpubsha256", "hsts", "interface", "json", "keepalive-time", "key", "key-type", "krb", "libcurl", "limit-rate", "local-port",
        "login-options", "mail-auth", "mail-from", "mail-rcpt", "max-filesize", "max-redirs", "max-time", "netrc-file", "noproxy",
        "oauth2-bearer", "output", "output-dir", "parallel-max", "pass", "pinnedpubkey", "preproxy", "proto", "proto-default", "proto-redir",
        "proxy", "proxy-cacert", "proxy-capath", "proxy-cert", "proxy-cert-type", "proxy-ciphers", "proxy-crlfile", "proxy-header",
        "proxy-key", "proxy-key-type", "proxy-pass", "proxy-pinnedpubkey", "proxy-service-name", "proxy-tls13-ciphers", "proxy-tlsauthtype",
        "proxy-tlspassword", "proxy-tlsuser", "proxy-user", "pubkey", "quote", "random-file", "range", "rate", "referer", "request",
        "request-target", "resolve", "retry", "retry-delay", "retry-max-time", "sasl-authzid", "service-name", "socks4", "socks4a", "socks5",
        "socks5-gssapi-service", "socks5-hostname", "speed-limit", "speed-time", "stderr", "telnet-option", "tftp-blksize", "time-cond",
        "tls-max", "tls13-ciphers", "tlsauthtype", "tlspassword", "tlsuser", "trace", "trace-ascii", "unix-socket", "upload-file", "url",
        "url-query", "user", "user-agent", "write-out",
    },
)  # fmt: skip
_CURL_DATA_FILE = {"-d", "--data", "--data-binary", "--data-ascii", "--json"}


def _curl(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, positionals = _CURL.scan(args)
    named: list[str] = []
    urls = list(positionals)
    for name, value in options:
        if value is None:
            continue
        if name in ("-T", "--upload-file"):
            named.extend(_curl_upload_list(value))
        elif name in ("-F", "--form"):
            _, eq, content = value.partition("=")
            if eq and content[:1] in ("@", "<"):
                named.append(_curl_form_file(content[1:]))
        elif name in _CURL_DATA_FILE and value.startswith("@"):
            named.append(value[1:])
        elif name == "--data-urlencode" and "=" not in value and "@" in value:
            named.append(value.partition("@")[2])
        elif name == "--url":
            urls.insert(0, value)
    if not urls or not named:
        return None
    destination = parse_url(urls[0], tool="curl", default_scheme="http")
    return UploadIntent("curl", _files(named, cwd), destination)


def _curl_upload_list(value: str) -> list[str]:
    """``-T`` names one file or a ``{a,b,c}`` list (curl's globbing), ``-`` and ``.`` being stdin."""
    if value in ("-", "."):
        return []
    match = re.fullmatch(r"(.*)\{([^{}]*)\}(.*)", value, re.DOTALL)
    if match is None:
        return [value]
    head, choices, tail = match.groups()
    return [head + choice + tail for choice in choices.split(",")[:MAX_ARGS]]


def _curl_form_file(spec: str) -> str:
    """The file of ``-F name=@file;type=...``: a quoted name may hold ``;``."""
    if spec.startswith('"'):
        end = spec.find('"', 1)
        return spec[1:end] if end != -1 else spec[1:]
    return spec.split(";", 1)[0]


_WGET = Options(
    "eoaiBtOTwQPUlARDIX",
    {
        "execute", "output-file", "append-output", "input-file", "base", "config", "tries", "output-document", "timeout", "wait", "quota",
        "directory-prefix", "user-agent", "level", "accept", "reject", "domains", "include-directories", "exclude-directories",
        "report-speed", "rejected-log", "retry-on-http-error", "start-pos", "progress", "dns-timeout", "connect-timeout", "read-timeout",
        "waitretry", "bind-address", "limit-rate", "restrict-file-names", "prefer-family", "user", "password", "use-askpass",
        "local-encoding", "remote-encoding", "cut-dirs", "http-user", "http-password", "default-page", "header", "compression",
        "proxy-user", "proxy-password", "referer", "load-cookies", "save-cookies", "post-data", "post-file", "method", "body-data",
        "body-file", "secure-protocol", "certificate", "certificate-type", "private-key", "private-key-type", "ca-certificate",
        "ca-directory", "crl-file", "pinnedpubkey", "ciphers", "ftp-user", "ftp-password", "warc-file", "warc-header", "warc-max-size",
        "warc-dedup", "warc-tempdir", "backups", "accept-regex", "reject-regex", "regex-type", "exclude-domains", "follow-tags", "ignore-tags",
    },
)  # fmt: skip


def _wget(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, urls = _WGET.scan(args)
    named = [value for name, value in options if name in ("--post-file", "--body-file") and value]
    if not urls or not named:
        return None
    destination = parse_url(urls[0], tool="wget", default_scheme="http")
    return UploadIntent("wget", _files(named, cwd), destination)


_RCLONE_UPLOADS = {"copy", "copyto", "move", "moveto", "sync"}
_RCLONE = Options(
    "",
    {
        "transfers", "checkers", "config", "bwlimit", "log-file", "log-level", "include", "exclude", "filter", "include-from", "exclude-from",
        "filter-from", "files-from", "files-from-raw", "min-size", "max-size", "min-age", "max-age", "max-transfer", "max-depth",
        "buffer-size", "backup-dir", "suffix", "timeout", "contimeout", "retries", "low-level-retries", "stats", "user-agent", "order-by",
        "multi-thread-streams", "multi-thread-cutoff", "compare-dest", "copy-dest", "cache-dir", "header", "header-upload",
        "password-command", "tpslimit", "drive-chunk-size", "s3-chunk-size", "s3-upload-concurrency", "stats-log-level", "cutoff-mode",
    },
)  # fmt: skip
_RCLONE_REMOTE = re.compile(r"^(:?[\w. -]{1,255}?|:[\w-]+(?:,[^:]*)?):(.*)$", re.DOTALL)


def _rclone(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    """``rclone copy|copyto|move|moveto|sync <local> <remote>:<path>``: rclone's value-taking flags
    are too many to list, so the common ones are, and the last two operands are read."""
    _, operands = _RCLONE.scan(args)
    if len(operands) < 3 or operands[0] not in _RCLONE_UPLOADS:
        return None
    source, target = operands[-2], operands[-1]
    match = _RCLONE_REMOTE.match(target)
    if match is None or "/" in match.group(1) or _RCLONE_REMOTE.match(source) and "/" not in source.partition(":")[0]:
        return None
    remote = match.group(1).split(",", 1)[0].strip()
    if not remote or remote == ":":
        return None
    destination = Destination("rclone", "rclone", remote.lower(), None, match.group(2) or None, f"{remote}:{match.group(2)}")
    return UploadIntent("rclone", _files([source], cwd), destination)


_READERS = {"scp": _scp, "sftp": _sftp, "rsync": _rsync, "curl": _curl, "wget": _wget, "rclone": _rclone}
