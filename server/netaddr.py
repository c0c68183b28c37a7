"""Client addresses: who really sent a request, whether an address is in a network list, which country and network (ASN) it is in."""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from geoip2fast import GeoIP2Fast

log = logging.getLogger(__name__)

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_FORWARDED_FOR = 4096
"""X-Forwarded-For characters read, counted from the right: the right end is what our own proxies wrote."""

GEO_DATA_FILE = "geoip2fast-ipv6.dat.gz"
"""The geoip2fast file with both IPv4 and IPv6 networks; why not the IPv4-only one is in CountryLookup."""
ASN_DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"
"""The bundled file with countries and ASNs (organisation name and network; no AS numbers, regions or cities)."""

# geoip2fast keeps its tables in module globals, not in the instance, so one lock covers every
# instance: loads replace those globals, and a lookup must not read them half replaced.
_GEOIP2FAST_LOCK = threading.Lock()


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted_proxies: Sequence[Network],
) -> str | None:
    """The address to record for a request.

    X-Forwarded-For is believed only when the TCP peer is one of our proxies; from anyone else it
    is the client's own claim and ignored. Each proxy appends the address it saw, so the list is
    read from the right: proxies of ours are skipped and the first other address is the client.
    Everything left of that was written by the client and could be anything.

    An entry that is not an address (``unknown``, a hostname, an empty slot, a bad port) ends
    the walk: nothing beyond it can be tied to a hop we trust, so the last address we could vouch
    for is returned. Ports are dropped, IPv4-mapped IPv6 becomes IPv4, and nothing here raises.

    Args:
        peer: the TCP peer as the server socket reported it; an IPv6 zone is dropped.
        forwarded_for: the X-Forwarded-For value; several header lines joined with commas, in order.
        trusted_proxies: networks of the load balancers in front of the collector.

    Returns:
        The compressed text form of the address, or None when the peer itself is not an address.
    """
    current = _parse_peer(peer)
    if current is None:
        return None
    if not forwarded_for or not _in_any(current, trusted_proxies):
        return str(current)
    for entry in reversed(_trailing_entries(forwarded_for)):
        hop = _parse_forwarded_entry(entry)
        if hop is None:
            break
        current = hop
        if not _in_any(hop, trusted_proxies):
            break
    return str(current)


def parse_networks(values: Iterable[str]) -> list[Network]:
    """Parse CIDR strings; host bits are allowed, so ``10.1.2.3/8`` means ``10.0.0.0/8``.

    Raises:
        ValueError: naming the first value that is not a network, so a settings error points at it.
    """
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an IP network: {value!r}") from exc
    return networks


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    """True when ``address`` is in one of ``networks``; False for anything that is not an address."""
    parsed = _parse_peer(address)
    return parsed is not None and _in_any(parsed, networks)


class GeoDataUnavailable(Exception):
    """geoip2fast or its database could not be loaded."""


@dataclass(frozen=True)
class Asn:
    """The autonomous system an address belongs to, as geoip2fast's bundled file names it.

    That file (GeoLite2 Country+ASN) carries the organisation and the announced network, not the
    AS number, so ``name`` is what tells two networks apart (``GOOGLE``, ``Andrews & Arnold Ltd``).
    """

    name: str
    network: str


class CountryLookup:
    """ISO 3166 alpha-2 country and ASN of public addresses, from the databases bundled with geoip2fast.

    Offline: only the file beside the installed package (or in ``data_dir``) is read, never one
    from the current directory, where geoip2fast looks first for a bare file name; the file is a
    pickle. The library's download functions are never called.

    The database is loaded by the first lookup that needs it. If that fails, a warning says so
    once and every address gets None from then on: a collector without countries still works.

    One file with both families is loaded, rather than IPv4 first and IPv6 on demand. Measured
    with geoip2fast 1.2.2: IPv4-only 0.07 s and +27 MiB, IPv4+IPv6 0.10 s and +47 MiB; loading
    one after the other peaks near +74 MiB because the old tables live until the swap. The
    IPv4-only file is also wrong for Andorra: the library treats the first 16 names of a file
    as reserved ranges, that file has only 15, so ``AD`` comes back as a private network.

    ASNs come from ``ASN_DATA_FILE``, loaded by the first ``asn()`` call only: logins and the
    session list ask for it, agent calls never do, so a collector that no reviewer logs into
    never pays for it. geoip2fast keeps one file's tables per process (module globals), so that
    file, which holds the countries too, then replaces the country file for both questions.
    Measured with geoip2fast 1.2.2: loaded alone 0.40 s and +107 MiB (the country file: +47 MiB);
    loaded after the country file, +127 MiB in all (the allocator keeps part of the first file's
    tables) with a peak near +155 MiB during the swap. Its countries are the same GeoLite2 data.
    Neither bundled file has regions or cities (geoip2fast's city files are separate downloads,
    which this offline collector does not make), so records carry a country and an ASN only.
    """

    def __init__(self, *, data_dir: Path | None = None, cache_size: int = 65536):
        """Set up without loading anything.

        Args:
            data_dir: directory holding ``GEO_DATA_FILE``; the installed geoip2fast package when None.
            cache_size: addresses remembered; an entry costs about 200 bytes, so the default about 13 MiB.
        """
        self._data_dir = data_dir
        self._engine: GeoIP2Fast | None = None
        self._engine_has_asn = False
        self._gave_up = False
        self._asn_gave_up = False
        self._cached = functools.lru_cache(maxsize=cache_size)(self._uncached)
        self._asn_cached = functools.lru_cache(maxsize=cache_size)(self._uncached_asn)

    def country(self, address: str) -> str | None:
        """The two-letter country of ``address``; None for non-public, unknown or malformed input."""
        if not isinstance(address, str):
            return None
        parsed = _parse_peer(address)
        if parsed is None or not _is_public(parsed):
            return None
        return self._cached(parsed)

    def asn(self, address: str) -> Asn | None:
        """The ASN of ``address``; None for non-public, unknown or malformed input (loads the ASN file once)."""
        if not isinstance(address, str):
            return None
        parsed = _parse_peer(address)
        if parsed is None or not _is_public(parsed):
            return None
        return self._asn_cached(parsed)

    def _uncached_asn(self, address: Address) -> Asn | None:
        with _GEOIP2FAST_LOCK:
            engine = self._asn_engine()
            if engine is None:
                return None
            detail = engine.lookup(str(address))
        name = (detail.asn_name or "").strip()
        if detail.is_private or not name or name == "<unknown>":
            return None
        return Asn(name[:128], str(detail.asn_cidr or "")[:64])

    def _asn_engine(self) -> GeoIP2Fast | None:
        if not self._engine_has_asn and not self._asn_gave_up:
            try:
                self._engine = _load_geoip2fast(self._data_dir, ASN_DATA_FILE)
                self._engine_has_asn = True
            except GeoDataUnavailable as exc:
                self._asn_gave_up = True
                log.warning("ASN lookups disabled, no address will have an ASN: %s", exc)
        return self._engine if self._engine_has_asn else None

    def _uncached(self, address: Address) -> str | None:
        with _GEOIP2FAST_LOCK:
            engine = self._loaded_engine()
            if engine is None:
                return None
            detail = engine.lookup(str(address))
        code = detail.country_code
        # Not-found comes back as "--", and some networks carry a continent ("ASIA") instead.
        if detail.is_private or len(code) != 2 or not code.isalpha() or not code.isupper():
            return None
        return code

    def _loaded_engine(self) -> GeoIP2Fast | None:
        if self._engine is None and not self._gave_up:
            try:
                self._engine = _load_geoip2fast(self._data_dir)
            except GeoDataUnavailable as exc:
                self._gave_up = True
                log.warning("country lookups disabled, no address will have a country: %s", exc)
        return self._engine


_default: CountryLookup | None = None
_default_lock = threading.Lock()


def default_lookup() -> CountryLookup:
    """The process-wide CountryLookup, so the database and its cache exist once per collector."""
    global _default
    with _default_lock:
        if _default is None:
            _default = CountryLookup()
        return _default


def _load_geoip2fast(data_dir: Path | None, name: str = GEO_DATA_FILE) -> GeoIP2Fast:
    """Load the data file ``name``; the caller holds ``_GEOIP2FAST_LOCK``."""
    # Imported here rather than at the top: importing geoip2fast rewrites PYTHONWARNINGS and
    # PYTHONIOENCODING in os.environ, and settings validation imports this module.
    try:
        import geoip2fast
        from geoip2fast.geoip2fast import GeoIPError
    except Exception as exc:  # missing, or its module code failed: either way no countries, not a failed request
        raise GeoDataUnavailable(f"cannot import geoip2fast: {exc!r}") from exc
    path = (data_dir or Path(geoip2fast.__file__).parent).resolve() / name
    if not path.is_file():
        raise GeoDataUnavailable(f"{path} does not exist")
    try:
        engine = geoip2fast.GeoIP2Fast(verbose=False, geoip2fast_data_file=str(path))
    except GeoIPError as exc:
        raise GeoDataUnavailable(str(exc)) from exc
    log.info("%s", engine.startup_line_text)
    return engine


def _is_public(address: Address) -> bool:
    # is_global alone lets multicast and ::/8 through; geoip2fast would look ::/8 addresses
    # (IPv4-compatible, NAT64) up in its IPv4 table because their integers are below 2**32.
    return address.is_global and not address.is_multicast and not address.is_reserved


def _in_any(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def _parse_peer(text: str | None) -> Address | None:
    """An address as a socket reports it; a zone (``fe80::1%eth0``) names our own interface, so it goes."""
    if not text:
        return None
    return _parse_address(text.strip().partition("%")[0])


def _parse_forwarded_entry(entry: str) -> Address | None:
    """One X-Forwarded-For item: ``a.b.c.d``, ``a.b.c.d:port``, ``v6``, ``[v6]`` or ``[v6]:port``."""
    entry = entry.strip()
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if not _is_port(port):
            return None
    else:
        host = entry
    # A zone names an interface of whichever machine wrote it; from a header it is meaningless.
    if "%" in host:
        return None
    return _parse_address(host)


def _parse_address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= 65535


def _trailing_entries(header: str) -> list[str]:
    """The comma-separated entries of the last ``MAX_FORWARDED_FOR`` characters.

    A client can pad the left of the header to any length; cutting from the right keeps the
    entries our proxies wrote, and the entry the cut went through is dropped as partial.
    """
    if len(header) <= MAX_FORWARDED_FOR:
        return header.split(",")
    return header[-MAX_FORWARDED_FOR:].split(",")[1:]
