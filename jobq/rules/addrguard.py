"""The address guard (SPEC §9): which URLs and addresses jobq may dial.

Pure rules, no I/O and no DNS (CONVENTIONS rule 4). `check_url_target` runs at
submit on the URL as written; the delivery code calls `refusal` again on every
address a host name actually resolves to, just before it connects.

`parse_host` reads an IP literal in every spelling a resolver or a browser
accepts (WHATWG URL host parsing, which matches `inet_aton`): `2130706433`,
`0x7f000001`, `0177.0.0.1`, `127.1`, `127.0.1`, a trailing dot, and IPv6.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from yarl import URL

from jobq.core.errors import FieldError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = frozenset({"http", "https"})
_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# First match wins, so the narrow entries come before the wide ones that hold them.
IPV4_REFUSED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "the unspecified address"),
    (_V4("0.0.0.0/8"), "a 'this network' address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("100.100.100.200/32"), "a cloud metadata address"),  # Alibaba Cloud
    (_V4("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.169.254/32"), "a cloud metadata address"),  # AWS, GCP, Azure, OpenStack, ...
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("168.63.129.16/32"), "a cloud metadata address"),  # Azure WireServer
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.0.0.0/24"), "an IETF protocol assignment address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)

IPV6_REFUSED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("::/96"), "a deprecated IPv4-compatible address"),
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_V6("100::/64"), "a discard-only address"),
    (_V6("2001:2::/48"), "a benchmarking address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("fd00:ec2::254/128"), "a cloud metadata address"),  # AWS IMDS over IPv6
    (_V6("fc00::/7"), "a unique-local address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a deprecated site-local address"),
    (_V6("ff00::/8"), "a multicast address"),
)

NAT64 = _V6("64:ff9b::/96")
IPV4_TRANSLATED = _V6("::ffff:0:0:0/96")  # SIIT, RFC 2765
TEREDO = _V6("2001::/32")
SIX_TO_FOUR = _V6("2002::/16")

REFUSED_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
# Special-use or private-use names that never mean a public host.
REFUSED_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")
HOST_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _embedded(address: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """An IPv4 address carried inside an IPv6 one, with the name of the form."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped address", address.ipv4_mapped
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in NAT64:
        return "a NAT64 address", low
    if address in IPV4_TRANSLATED:
        return "an IPv4-translated address", low
    if address.sixtofour is not None:
        return "a 6to4 address", address.sixtofour
    return None


def refusal(address: IPAddress) -> str | None:
    """Why `address` may not be dialled, e.g. "a loopback address (127.0.0.0/8)";
    None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "an IPv6 address with a zone id"
    embedded = _embedded(address)
    if embedded is not None:
        form, inner = embedded
        reason = refusal(inner)
        return f"{form} of {inner}, {reason}" if reason is not None else None
    if isinstance(address, ipaddress.IPv6Address) and address.teredo is not None:
        server, client = address.teredo
        for inner in (client, server):
            reason = refusal(inner)
            if reason is not None:
                return f"a Teredo address carrying {inner}, {reason}"
        return None
    table: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]
    table = IPV4_REFUSED if isinstance(address, ipaddress.IPv4Address) else IPV6_REFUSED
    for network, reason in table:
        if address in network:
            return f"{reason} ({network})"
    if not address.is_global:  # anything else IANA marks as not globally reachable
        return "a reserved address"
    return None


def _ipv4_number(part: str) -> int | None:
    """One dotted part as `inet_aton` reads it: 0x hex, leading-0 octal, else decimal."""
    text, radix, digits = part, 10, "0123456789"
    if text[:2] in ("0x", "0X"):
        text, radix, digits = text[2:], 16, "0123456789abcdefABCDEF"
    elif len(text) > 1 and text.startswith("0"):
        text, radix, digits = text[1:], 8, "01234567"
    if not all(c in digits for c in text):
        return None
    return int(text, radix) if text else 0


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    return bool(last) and (all(c in "0123456789" for c in last) or _ipv4_number(last) is not None)


def parse_host(host: str) -> IPAddress | None:
    """The IP address a URL host names, in any spelling; None for a host name.
    Raises `ValueError` for a host that is an address but a malformed one
    (`1.2.3.256`, `0x1g`, `[::1`), or an IPv6 literal with a zone id."""
    text = host.strip()
    if text.startswith("[") or text.endswith("]") or ":" in text:
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if "%" in inner:
            raise ValueError(f"{host!r} carries an IPv6 zone id")
        try:
            return ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
    labels = text.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # one trailing dot: "127.0.0.1." is 127.0.0.1
    if not _ends_in_number(labels):
        return None
    numbers = [_ipv4_number(label) if label else None for label in labels]
    bad = ValueError(f"{host!r} looks like an IPv4 address but is not a valid one")
    if len(numbers) > 4:
        raise bad
    parts = [n for n in numbers if n is not None]
    if len(parts) != len(numbers) or any(n > 255 for n in parts[:-1]) or parts[-1] >= 256 ** (5 - len(parts)):
        raise bad
    value = parts[-1]
    for position, number in enumerate(parts[:-1]):
        value += number << (8 * (3 - position))
    return ipaddress.IPv4Address(value)


def _name_refusal(name: str) -> str | None:
    name = name.lower().removesuffix(".")
    if name in REFUSED_NAMES or any(name.endswith(suffix) for suffix in REFUSED_SUFFIXES):
        return f"must not point at {name}, a local or cloud metadata host name"
    return None


def _valid_name(name: str) -> bool:
    labels = name.lower().removesuffix(".").split(".")
    return all(labels) and all(c in HOST_NAME_CHARACTERS for label in labels for c in label)


def check_url_target(url: str, allow_private: bool) -> str | None:
    """Why `url` may not be a webhook or HTTP-job target; None when it may.

    Only http(s), no user name or password, a host. An IP literal (any spelling)
    must pass `refusal`, and local or metadata host names are refused by name.
    `allow_private` (JOBQ_ALLOW_PRIVATE_URLS) lifts the address and name rules,
    never the scheme, userinfo or well-formedness ones. The addresses a host
    name resolves to are checked when connecting, not here."""
    try:
        parsed = URL(url)
        host = parsed.raw_host
        decoded = parsed.host  # decoded lazily: a bad IDNA label ("xn--") raises here
    except (ValueError, TypeError):  # UnicodeError is a ValueError
        return "not a valid URL"
    if parsed.scheme not in ALLOWED_SCHEMES:
        return "only http and https URLs are allowed"
    # yarl drops an empty userinfo ("http://@host/"); the text as written still has it.
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in urlsplit(url).netloc:
        return "must not carry a user name or password"
    if not host or not decoded:
        return "needs a host"
    try:
        address = parse_host(host)
    except ValueError as exc:
        return str(exc)
    if address is None and not _valid_name(host):
        return f"{host!r} is not a valid host name"
    if allow_private:
        return None
    if address is None:
        return _name_refusal(host)
    reason = refusal(address)
    return None if reason is None else f"must not point at {address}, {reason}"


def check_url(value: object, field: str, errors: list[FieldError], *, allow_private: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        errors.append(FieldError(field, f"an http(s) URL of at most {MAX_URL_LENGTH} characters"))
        return None
    try:
        url = URL(value)
        has_host = bool(url.host)  # decoded lazily: a bad IDNA label raises UnicodeError here
    except (ValueError, TypeError):
        url, has_host = None, False
    if url is None or url.scheme not in ("http", "https") or not has_host:
        errors.append(FieldError(field, "an absolute http or https URL"))
        return None
    if url.user is not None or url.password is not None:
        errors.append(FieldError(field, "must not carry a user name or password"))
        return None
    refused = check_url_target(value, allow_private)  # the address guard, SPEC §9
    if refused is not None:
        errors.append(FieldError(field, refused))
        return None
    return value
