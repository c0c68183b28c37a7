"""Client addresses behind proxies, network lists, and countries from the bundled geoip2fast database."""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from server import netaddr
from server.netaddr import (
    ASN_DATA_FILE,
    GEO_DATA_FILE,
    MAX_FORWARDED_FOR,
    Asn,
    CountryLookup,
    client_address,
    default_lookup,
    in_networks,
    parse_networks,
)

REPO = Path(__file__).resolve().parent.parent
TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8"])
PROXY = "10.0.0.5"
CLIENT = "198.51.100.7"


class TestClientAddress:
    def test_untrusted_peer_ignores_forwarded_for(self) -> None:
        assert client_address("203.0.113.9", "198.51.100.7", TRUSTED) == "203.0.113.9"

    def test_untrusted_peer_cannot_spoof_a_trusted_address(self) -> None:
        assert client_address("203.0.113.9", "10.0.0.1", TRUSTED) == "203.0.113.9"

    def test_no_trusted_proxies_means_the_peer(self) -> None:
        assert client_address(PROXY, CLIENT, []) == PROXY

    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_trusted_peer_without_header_is_the_client(self, header: str | None) -> None:
        assert client_address(PROXY, header, TRUSTED) == PROXY

    def test_one_proxy(self) -> None:
        assert client_address(PROXY, CLIENT, TRUSTED) == CLIENT

    def test_chain_of_trusted_proxies_is_skipped(self) -> None:
        assert client_address(PROXY, f"{CLIENT}, 10.0.1.1, 10.0.2.2", TRUSTED) == CLIENT

    def test_spoofed_entries_left_of_the_client_are_ignored(self) -> None:
        header = f"6.6.6.6, 10.9.9.9, {CLIENT}, 10.0.1.1"
        assert client_address(PROXY, header, TRUSTED) == CLIENT

    def test_all_hops_trusted_gives_the_leftmost(self) -> None:
        assert client_address(PROXY, "10.0.1.1, 10.0.2.2", TRUSTED) == "10.0.1.1"

    @pytest.mark.parametrize(
        ("entry", "expected"),
        [
            ("198.51.100.7:5678", CLIENT),
            ("198.51.100.7:0", CLIENT),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            # A bare IPv6 address never carries a port: the last group is part of the address.
            ("2001:db8::1:443", "2001:db8::1:443"),
            ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            ("::ffff:198.51.100.7", CLIENT),
            ("[::ffff:198.51.100.7]:80", CLIENT),
            ("\t 198.51.100.7  ", CLIENT),
        ],
    )
    def test_entry_forms(self, entry: str, expected: str) -> None:
        assert client_address(PROXY, f"{entry}, 10.0.1.1", TRUSTED) == expected

    def test_ipv6_proxies(self) -> None:
        assert client_address("fd00::5", "2001:db8::7, fd00::9", TRUSTED) == "2001:db8::7"

    def test_mapped_ipv4_peer_is_the_ipv4_address(self) -> None:
        assert client_address("::ffff:203.0.113.9", None, TRUSTED) == "203.0.113.9"

    def test_mapped_ipv4_peer_matches_ipv4_proxy_networks(self) -> None:
        assert client_address("::ffff:10.0.0.5", CLIENT, TRUSTED) == CLIENT

    def test_peer_zone_is_dropped(self) -> None:
        assert client_address("fe80::1%eth0", None, TRUSTED) == "fe80::1"

    @pytest.mark.parametrize("peer", [None, "", "garbage", "1.2.3.4:80", "999.1.1.1"])
    def test_unusable_peer_gives_none(self, peer: str | None) -> None:
        assert client_address(peer, CLIENT, TRUSTED) is None

    @pytest.mark.parametrize(
        "garbage",
        [
            "unknown",
            "garbage",
            "proxy.example.com",
            "198.51.100.7:99999",
            "198.51.100.7:123456",
            "198.51.100.7:",
            "198.51.100.7:http",
            "[2001:db8::1]x",
            "[2001:db8::1]:",
            "[2001:db8::1",
            "[198.51.100.7]:80x",
            "2001:db8::1%eth0",
            "198.51.100.07",
            '"198.51.100.7"',
            "",
        ],
    )
    def test_garbage_stops_at_the_last_trusted_hop(self, garbage: str) -> None:
        assert client_address(PROXY, f"{CLIENT}, {garbage}, 10.0.1.1", TRUSTED) == "10.0.1.1"
        assert client_address(PROXY, garbage, TRUSTED) == PROXY

    def test_trailing_comma_is_an_empty_entry(self) -> None:
        assert client_address(PROXY, f"{CLIENT},", TRUSTED) == PROXY

    def test_huge_header_still_finds_the_client(self) -> None:
        header = "6.6.6.6, " * 100_000 + f"{CLIENT}, 10.0.1.1"
        assert client_address(PROXY, header, TRUSTED) == CLIENT

    def test_huge_header_of_trusted_hops_does_not_raise(self) -> None:
        assert client_address(PROXY, "10.0.0.1, " * 100_000 + "10.0.0.2", TRUSTED) == "10.0.0.1"

    def test_huge_header_without_commas_does_not_raise(self) -> None:
        assert client_address(PROXY, "x" * 1_000_000, TRUSTED) == PROXY

    def test_entry_cut_by_the_length_limit_is_not_believed(self) -> None:
        # The limit falls inside 198.51.100.7, leaving "8.51.100.7": a valid, wrong address.
        tail = ",10.0.1.1" * 454
        header = CLIENT + tail
        assert len(header) - MAX_FORWARDED_FOR == len(CLIENT) - len("8.51.100.7")
        assert client_address(PROXY, header, TRUSTED) == "10.0.1.1"

    def test_random_headers_never_raise(self) -> None:
        rng = random.Random(20240618)
        alphabet = "0123456789abcdef:.[]%, \t"
        for _ in range(5000):
            header = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
            result = client_address(PROXY, header, TRUSTED)
            assert result is None or isinstance(result, str)


class TestNetworks:
    def test_parse(self) -> None:
        networks = parse_networks(["10.0.0.0/8", " 192.168.1.7/24 ", "2001:db8::/32", "198.51.100.9"])
        assert [str(n) for n in networks] == ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32", "198.51.100.9/32"]

    def test_parse_nothing(self) -> None:
        assert parse_networks([]) == []

    @pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-network", "", "10.0.0.0/8/8", "2001:db8::/129"])
    def test_bad_value_is_named(self, bad: str) -> None:
        with pytest.raises(ValueError, match=re.escape(f"not an IP network: {bad!r}")):
            parse_networks(["10.0.0.0/8", bad])

    def test_non_string_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="None"):
            parse_networks([None])  # type: ignore[list-item]

    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("10.1.2.3", True),
            ("11.0.0.1", False),
            ("::ffff:10.1.2.3", True),
            ("fd00::1", True),
            ("fe80::1", False),
            ("garbage", False),
            ("", False),
        ],
    )
    def test_in_networks(self, address: str, expected: bool) -> None:
        assert in_networks(address, TRUSTED) is expected

    def test_ipv4_never_matches_an_ipv6_network(self) -> None:
        assert not in_networks("0.0.0.1", parse_networks(["::/96"]))

    def test_in_no_networks(self) -> None:
        assert not in_networks("10.1.2.3", [])


class FakeEngine:
    """Stands in for geoip2fast.GeoIP2Fast: answers ``lookup`` from a dict and records the calls."""

    def __init__(self, codes: dict[str, str], *, private: bool = False):
        self.codes = codes
        self.private = private
        self.calls: list[str] = []

    def lookup(self, address: str) -> SimpleNamespace:
        self.calls.append(address)
        return SimpleNamespace(country_code=self.codes.get(address, "--"), is_private=self.private)


class TestCountry:
    @pytest.mark.parametrize(
        ("address", "country"),
        [
            ("8.8.8.8", "US"),  # Google public DNS
            ("::ffff:8.8.8.8", "US"),
            ("2001:4860:4860::8888", "US"),
            ("133.11.0.1", "JP"),  # University of Tokyo, 133.0.0.0/8
            ("217.0.43.1", "DE"),  # Deutsche Telekom
            ("2003::1", "DE"),  # Deutsche Telekom
            ("80.58.61.250", "ES"),  # Telefonica de Espana
            ("2a01:e00::1", "FR"),  # Free SAS
            ("200.160.2.3", "BR"),  # NIC.br
            # Andorra Telecom: the IPv4-only geoip2fast file reports Andorra as a private network.
            ("194.158.64.1", "AD"),
        ],
    )
    def test_well_known_addresses(self, address: str, country: str) -> None:
        assert default_lookup().country(address) == country

    @pytest.mark.parametrize(
        "address",
        [
            "10.0.0.1",
            "127.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "192.0.2.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fe80::1%eth0",
            "fc00::1",
            "ff02::1",
            "2001:db8::1",
            "::8.8.8.8",
            "garbage",
            "",
            "8.8.8.8:53",
            "8.8.8.8/32",
        ],
    )
    def test_no_country(self, address: str) -> None:
        assert default_lookup().country(address) is None

    @pytest.mark.parametrize("value", [None, 134744072, b"\x08\x08\x08\x08"])
    def test_non_string_has_no_country(self, value: object) -> None:
        assert default_lookup().country(value) is None  # type: ignore[arg-type]

    def test_default_lookup_is_shared_across_threads(self) -> None:
        seen: list[CountryLookup] = []
        threads = [threading.Thread(target=lambda: seen.append(default_lookup())) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 8 and all(lookup is default_lookup() for lookup in seen)

    def test_only_two_letter_codes_are_countries(self, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = FakeEngine({"1.0.0.1": "ASIA", "1.0.0.2": "--", "1.0.0.3": "", "1.0.0.4": "SE"})
        monkeypatch.setattr(netaddr, "_load_geoip2fast", lambda data_dir: engine)
        lookup = CountryLookup()
        assert [lookup.country(f"1.0.0.{n}") for n in range(1, 5)] == [None, None, None, "SE"]

    def test_library_private_flag_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = FakeEngine({"1.0.0.1": "SE"}, private=True)
        monkeypatch.setattr(netaddr, "_load_geoip2fast", lambda data_dir: engine)
        assert CountryLookup().country("1.0.0.1") is None

    def test_results_are_cached_by_address_not_spelling(self, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = FakeEngine({"1.0.0.1": "SE"})
        monkeypatch.setattr(netaddr, "_load_geoip2fast", lambda data_dir: engine)
        lookup = CountryLookup(cache_size=4)
        for spelling in ["1.0.0.1", " 1.0.0.1", "::ffff:1.0.0.1", "::FFFF:1.0.0.1"]:
            assert lookup.country(spelling) == "SE"
        assert engine.calls == ["1.0.0.1"]

    def test_missing_database_warns_once_and_gives_none(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        lookup = CountryLookup(data_dir=tmp_path)
        with caplog.at_level(logging.WARNING, logger="server.netaddr"):
            assert lookup.country("8.8.8.8") is None
            assert lookup.country("9.9.9.9") is None
        assert len(caplog.records) == 1
        assert GEO_DATA_FILE in caplog.records[0].getMessage()

    def test_corrupt_database_warns_and_gives_none(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        (tmp_path / GEO_DATA_FILE).write_bytes(b"not gzip at all")
        with caplog.at_level(logging.WARNING, logger="server.netaddr"):
            assert CountryLookup(data_dir=tmp_path).country("8.8.8.8") is None
        assert "country lookups disabled" in caplog.text
        assert default_lookup().country("8.8.8.8") == "US"

    def test_asns_come_from_the_bundled_file_which_then_answers_countries_too(self) -> None:
        lookup = CountryLookup()
        assert lookup.country("8.8.8.8") == "US"
        assert lookup.asn("8.8.8.8") == Asn("GOOGLE", "8.8.8.0/24")
        assert lookup.asn("2a10:8b40::1") == Asn("Coresystem Sasu", "2a10:8b40::/36")
        assert lookup.country("81.2.69.142") == "GB" and lookup.asn("81.2.69.142") is not None
        assert [lookup.asn(a) for a in ("10.0.0.1", "192.0.2.1", "not an address", "")] == [None] * 4

    def test_a_missing_asn_file_warns_and_gives_none(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="server.netaddr"):
            assert CountryLookup(data_dir=tmp_path).asn("8.8.8.8") is None
        assert "ASN lookups disabled" in caplog.text and ASN_DATA_FILE in caplog.text

    def test_without_geoip2fast_there_are_no_countries(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setitem(sys.modules, "geoip2fast", None)
        with caplog.at_level(logging.WARNING, logger="server.netaddr"):
            assert CountryLookup().country("8.8.8.8") is None
        assert "cannot import geoip2fast" in caplog.text


FRESH_PROCESS = textwrap.dedent(
    """
    import json, os, socket, sys, threading

    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    socket.socket.connect = socket.socket.connect_ex = socket.getaddrinfo = no_network
    environment = dict(os.environ)

    from server.netaddr import default_lookup

    imported_early = "geoip2fast" in sys.modules
    environment_kept = dict(os.environ) == environment
    addresses = ["8.8.8.8", "2001:4860:4860::8888", "133.11.0.1", "2003::1", "10.0.0.1"] * 20
    results = [None] * len(addresses)

    def look(i):
        results[i] = default_lookup().country(addresses[i])

    threads = [threading.Thread(target=look, args=(i,)) for i in range(len(addresses))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = {"imported_early": imported_early, "environment_kept": environment_kept}
    print(json.dumps({**report, "results": results[:5], "consistent": results == results[:5] * 20}))
    """
)


def test_fresh_process_loads_quietly_offline_and_ignores_the_current_directory(tmp_path: Path) -> None:
    # geoip2fast prefers a bare-named data file in the current directory; these must not be read.
    for name in ("geoip2fast.dat.gz", GEO_DATA_FILE):
        (tmp_path / name).write_bytes(b"planted")
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # Exactly one line: geoip2fast printed nothing of its own on stdout.
    assert done.stdout.count("\n") == 1
    assert json.loads(done.stdout) == {
        "imported_early": False,
        "environment_kept": True,
        "results": ["US", "US", "JP", "DE", None],
        "consistent": True,
    }

