"""Table-driven tests of the address guard (SPEC §9, CONVENTIONS rule 4)."""

from __future__ import annotations

import ipaddress

import pytest

from jobq.rules.addrguard import check_url_target, parse_host, refusal
from tests.conftest import HarnessFactory

# (address, a word the refusal must contain); None: the address may be dialled.
ADDRESSES: list[tuple[str, str | None]] = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared"),
    ("100.127.255.255", "shared"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("168.63.129.16", "metadata"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.88.99.1", "6to4 relay"),
    # IPv6
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "discard"),
    ("64:ff9b:1::a", "NAT64"),
    ("2001:10::1", "reserved"),  # ORCHID, caught by the catch-all
    # IPv4-mapped, -compatible, -translated and other embedded forms
    ("::ffff:127.0.0.1", "IPv4-mapped address of 127.0.0.1, a loopback"),
    ("::ffff:7f00:1", "IPv4-mapped address of 127.0.0.1, a loopback"),
    ("::ffff:a9fe:a9fe", "metadata"),
    ("::ffff:10.1.2.3", "private"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::8.8.8.8", "IPv4-compatible"),
    ("::ffff:0:7f00:1", "IPv4-translated address of 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 address of 169.254.169.254, a cloud metadata"),
    ("64:ff9b::127.0.0.1", "NAT64 address of 127.0.0.1"),
    ("64:ff9b::10.0.0.1", "private"),
    ("2002:7f00:0001::", "6to4 address of 127.0.0.1, a loopback"),
    ("2002:c0a8:0101::1", "6to4 address of 192.168.1.1"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),  # client 192.0.2.45
    ("2001:0:7f00:1::ffff:ffff", "Teredo"),  # server 127.0.0.1
    ("fe80::1%eth0", "zone id"),
    # public: allowed
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("93.184.216.34", None),
    ("100.63.255.255", None),
    ("100.128.0.0", None),
    ("172.32.0.1", None),
    ("223.255.255.255", None),
    ("2606:4700:4700::1111", None),
    ("2a00:1450:4001:81b::200e", None),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None),
    ("2002:0808:0808::1", None),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),  # Teredo, server and client public
]


@pytest.mark.parametrize(("text", "expected"), ADDRESSES, ids=[row[0] for row in ADDRESSES])
def test_refusal(text: str, expected: str | None) -> None:
    reason = refusal(ipaddress.ip_address(text))
    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        assert expected in reason


# (URL host as written, the address it names); None: a host name.
HOSTS: list[tuple[str, str | None]] = [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0x7f.0.0.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),
    ("00.0.0.0", "0.0.0.0"),
    ("169.254.43518", "169.254.169.254"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("3232235777", "192.168.1.1"),
    ("10.1", "10.0.0.1"),
    ("4294967295", "255.255.255.255"),
    ("8.8.8.8", "8.8.8.8"),
    ("134744072", "8.8.8.8"),
    ("[::]", "::"),
    ("[::1]", "::1"),
    ("::1", "::1"),
    ("[0:0:0:0:0:0:0:1]", "::1"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("[2606:4700:4700::1111]", "2606:4700:4700::1111"),
    ("example.com", None),
    ("localhost", None),
    ("0x1g", None),
    ("1.2.3.example", None),
    ("xn--bcher-kva.de", None),
    ("123.example", None),
]


@pytest.mark.parametrize(("host", "expected"), HOSTS, ids=[row[0] for row in HOSTS])
def test_parse_host(host: str, expected: str | None) -> None:
    address = parse_host(host)
    assert address == (None if expected is None else ipaddress.ip_address(expected))


MALFORMED_HOSTS = [
    "1.2.3.256",
    "256.0.0.1",
    "127.0x1g.0.1",
    "08.0.0.1",
    "1.2.3.4.5",
    "4294967296",
    "127.16777216",
    "1..1",
    "[fe80::1%25eth0]",
    "[fe80::1%eth0]",
    "[::1",
    "[127.0.0.1]",
    "[::ffff:0177.0.0.1]",
    "%31%32%37.0.0.1",
]


@pytest.mark.parametrize("host", MALFORMED_HOSTS)
def test_parse_host_refuses_a_malformed_address(host: str) -> None:
    with pytest.raises(ValueError, match=r"address|zone id"):
        parse_host(host)


# (URL, a word the refusal must contain or None, the same with allow_private=True)
URLS: list[tuple[str, str | None, str | None]] = [
    # public: allowed either way
    ("https://example.com/hook", None, None),
    ("http://example.com:8080/x?y=1", None, None),
    ("HTTPS://EXAMPLE.COM/", None, None),
    ("https://b\u00fccher.de/", None, None),
    ("http://8.8.8.8/", None, None),
    ("http://[2606:4700:4700::1111]:443/", None, None),
    ("http://134744072/", None, None),
    ("http://[::ffff:8.8.8.8]/", None, None),
    ("http://hooks.internal-example.com/", None, None),
    # addresses, in every spelling: refused unless private URLs are allowed
    ("http://127.0.0.1:9000/hook", "loopback", None),
    ("http://0x7f000001/", "loopback", None),
    ("http://2130706433/", "loopback", None),
    ("http://127.1/", "loopback", None),
    ("http://127.0.1/", "loopback", None),
    ("http://0177.0.0.1/", "loopback", None),
    ("http://127.0.0.1./", "loopback", None),
    ("http://\uff10x7f000001/", "loopback", None),
    ("http://\uff11\uff12\uff17.0.0.1/", "loopback", None),
    ("http://0/", "unspecified", None),
    ("http://[::]/", "unspecified", None),
    ("http://[::1]/", "loopback", None),
    ("http://[::ffff:127.0.0.1]/", "loopback", None),
    ("http://[::ffff:7f00:1]/", "loopback", None),
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata", None),
    ("http://[2002:7f00:0001::]/", "6to4", None),
    ("http://169.254.169.254/latest/meta-data/", "metadata", None),
    ("http://0xa9fea9fe/", "metadata", None),
    ("http://10.0.0.5/", "private", None),
    ("http://192.168.0.1/", "private", None),
    ("http://100.64.1.1/", "shared", None),
    ("http://224.0.0.1/", "multicast", None),
    ("http://[ff02::1]/", "multicast", None),
    ("http://[fd00::1]/", "unique-local", None),
    ("http://[fe80::1]/", "link-local", None),
    ("http://[fec0::1]/", "site-local", None),
    ("http://240.0.0.1/", "reserved", None),
    ("http://255.255.255.255/", "broadcast", None),
    ("http://192.0.2.1/", "documentation", None),
    # names that are local or metadata by definition: refused unless allowed
    ("http://localhost:8080/", "localhost", None),
    ("http://LOCALHOST./", "localhost", None),
    ("http://api.localhost/", "localhost", None),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata", None),
    ("http://metadata/", "metadata", None),
    ("http://printer.local/", "printer.local", None),
    ("http://svc.corp.internal/", "internal", None),
    # scheme, userinfo and malformed hosts: refused even when private URLs are allowed
    ("ftp://example.com/hook", "http and https", "http and https"),
    ("file:///etc/passwd", "http and https", "http and https"),
    ("gopher://127.0.0.1:6379/_INFO", "http and https", "http and https"),
    ("javascript:alert(1)", "http and https", "http and https"),
    ("//example.com/hook", "http and https", "http and https"),
    ("https://user:pass@example.com/", "user name", "user name"),
    ("https://user@example.com/", "user name", "user name"),
    ("https://@example.com/", "user name", "user name"),
    ("http://user@127.0.0.1/", "user name", "user name"),
    ("http:///hook", "host", "host"),
    ("http://xn--/", "valid URL", "valid URL"),
    ("http://[::1/", "valid URL", "valid URL"),
    ("http://[fe80::1%25eth0]/", "zone id", "zone id"),
    ("http://1.2.3.256/", "not a valid one", "not a valid one"),
    ("http://%31%32%37.0.0.1/", "not a valid one", "not a valid one"),
    ("http://127.0.0.1%00.example.com/", "host name", "host name"),
    ("http://a..b/", "host name", "host name"),
]


@pytest.mark.parametrize("allow_private", [False, True], ids=["guarded", "private-allowed"])
@pytest.mark.parametrize(("url", "guarded", "allowed"), URLS, ids=[row[0] for row in URLS])
def test_check_url_target(url: str, guarded: str | None, allowed: str | None, allow_private: bool) -> None:
    expected = allowed if allow_private else guarded
    message = check_url_target(url, allow_private)
    if expected is None:
        assert message is None
    else:
        assert message is not None
        assert expected in message


# Wired in at submit: a refused webhookUrl is a 422 naming the field (SPEC §9).
SUBMITTED = ["http://127.0.0.1:9000/hook", "http://0x7f000001/", "http://[::ffff:169.254.169.254]/", "http://localhost/"]


@pytest.mark.parametrize("url", SUBMITTED)
async def test_submit_refuses_a_guarded_webhook_url_naming_the_field(make_harness: HarnessFactory, url: str) -> None:
    jobq = await make_harness()
    problem = await jobq.submit(expect=422, webhookUrl=url)
    assert [error["field"] for error in problem["errors"]] == ["webhookUrl"]
    assert "must not point at" in problem["errors"][0]["message"]
    response = await jobq.client.post(
        "/jobs/batch", json={"jobs": [{"type": "echo", "webhookUrl": url}]}, headers=jobq.headers()
    )
    assert response.status == 422
    assert [error["field"] for error in (await response.json())["errors"]] == ["jobs[0].webhookUrl"]


@pytest.mark.parametrize("url", SUBMITTED)
async def test_allow_private_urls_lets_a_loopback_webhook_through(make_harness: HarnessFactory, url: str) -> None:
    jobq = await make_harness(allow_private_urls=True)
    job = await jobq.submit(webhookUrl=url)
    assert job["webhookUrl"] == url


async def test_allow_private_urls_still_refuses_userinfo_and_other_schemes(make_harness: HarnessFactory) -> None:
    jobq = await make_harness(allow_private_urls=True)
    for url in ("http://user@127.0.0.1/", "gopher://127.0.0.1:6379/", "http://[fe80::1%25eth0]/"):
        problem = await jobq.submit(expect=422, webhookUrl=url)
        assert [error["field"] for error in problem["errors"]] == ["webhookUrl"], url
