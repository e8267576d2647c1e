"""Outbound webhook requests, with the SSRF guard: the only module that imports httpx.

A URL is checked twice. At registration (``url_check``): the scheme (https; http only
when staff allow it) and every address its host resolves to. At send time, inside the
transport (``PinnedTransport``): the host is resolved again, every address checked, and
the connection made to the checked address itself: the request's URL is rewritten to
that IP while the ``Host`` header keeps the name and TLS gets it as SNI (httpcore's
``sni_hostname`` extension), so the certificate is verified against the name. No second
DNS lookup happens after the check, so a name that re-resolves to 127.0.0.1 (DNS
rebinding) cannot slip through. Redirects are never followed; proxies from the
environment are ignored; one client per attempt, so no connection is shared between
hosts.

Refused: loopback, link-local, private (RFC 1918), unique-local (fc00::/7), multicast,
unspecified, reserved, CGNAT (100.64.0.0/10), anything else not globally routable, and
IPv4-mapped / 6to4 / NAT64 IPv6 forms of those. ``allow_internal`` (staff, per
endpoint) lifts the address check only. Plain Python: no Django.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressRefused(Exception):
    """The URL or its address is not allowed; ``field`` names what was wrong."""

    def __init__(self, message: str, field: str = "url") -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # None: no HTTP answer (see error)
    error: str  # "" when an HTTP answer came (2xx or not)
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be reached ("loopback", "private", …), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            reason = address_refusal(inner)
            return f"{reason} (IPv4 inside IPv6)" if reason else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT", isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT),
        ("unique-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_private),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    return None


def host_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host`` (an IP literal is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressRefused(f"cannot resolve host {host!r}") from exc
    seen: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    if not seen:
        raise EgressRefused(f"cannot resolve host {host!r}")
    return seen


def addresses_check(host: str, port: int, *, allow_internal: bool) -> IPAddress:
    """The address to connect to: ``host``'s first, once every address passed."""
    addresses = host_resolve(host, port)
    if not allow_internal:
        for ip in addresses:
            reason = address_refusal(ip)
            if reason and str(ip) == host:
                raise EgressRefused(f"{ip} is refused ({reason} address)")
            if reason:
                raise EgressRefused(f"{host} resolves to {ip}, refused ({reason} address)")
    return addresses[0]


def url_parts(url: str, *, allow_http: bool) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL; EgressRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressRefused("is not a valid URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise EgressRefused("must be an https:// URL")
    if scheme == "http" and not allow_http:
        raise EgressRefused("must be an https:// URL (plain http needs staff approval)")
    if not parts.hostname:
        raise EgressRefused("has no host")
    if parts.username or parts.password:
        raise EgressRefused("must not carry a user name or password")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def url_check(url: str, *, allow_http: bool, allow_internal: bool) -> None:
    """Registration-time check of a webhook URL (EgressRefused names the problem)."""
    _scheme, host, port = url_parts(url, allow_http=allow_http)
    addresses_check(host, port, allow_internal=allow_internal)


class PinnedTransport(httpx.BaseTransport):
    """Checks the request's host at connect time and connects to the checked address."""

    def __init__(self, *, allow_internal: bool, verify: bool | str = True) -> None:
        self.allow_internal = allow_internal
        self._inner = httpx.HTTPTransport(verify=verify, retries=0, trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        ip = addresses_check(host, port, allow_internal=self.allow_internal)
        if str(ip) != host:
            # The Host header was set from the name when the request was built.
            request.url = request.url.copy_with(host=str(ip))
            request.extensions = {**request.extensions, "sni_hostname": host}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _short(text: str, limit: int = 200) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)[:limit]


def webhook_post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    allow_http: bool,
    allow_internal: bool,
    timeout_s: float,
) -> Outcome:
    """POST ``body`` once. Never raises: the outcome carries the status or the error."""
    started = time.monotonic()

    def done(status: int | None, error: str = "") -> Outcome:
        return Outcome(status, _short(error), int((time.monotonic() - started) * 1000))

    try:
        url_parts(url, allow_http=allow_http)
        transport = PinnedTransport(allow_internal=allow_internal)
        with httpx.Client(
            transport=transport, timeout=timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            request = client.build_request("POST", url, content=body, headers=headers)
            response = client.send(request, stream=True)
            response.close()  # the body is not ours to read
    except EgressRefused as exc:
        return done(None, f"refused: {exc.message}")
    except httpx.TimeoutException:
        return done(None, f"timed out after {timeout_s:g}s")
    except httpx.HTTPError as exc:
        return done(None, f"{type(exc).__name__}: {exc}")
    if response.is_redirect:
        return done(response.status_code, "redirect not followed")
    if not response.is_success:
        return done(response.status_code, f"HTTP {response.status_code}")
    return done(response.status_code)
