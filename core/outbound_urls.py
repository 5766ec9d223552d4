"""Which URLs our servers may call on a tenant's behalf (SSRF guard).

A tenant admin chooses the scheduler's `webhook_url`, and our workers POST to it from inside our network.
Unless OUTBOUND_WEBHOOK_ALLOW_PRIVATE is on, such a URL must name a host whose every address is public:
not loopback, private (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254), shared, reserved
or multicast. OUTBOUND_WEBHOOK_ALLOWED_HOSTS lists host names let through anyway (an internal gateway
an operator trusts).

The URL is checked when it is set (a 400 with the reason) and again right before each request, because
what a name resolves to can change after it was accepted (DNS rebinding). Redirects are never followed
by the sender, so a public URL cannot bounce a request to a private one.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class OutboundUrlRefused(Exception):
    """The URL must not be called: bad form, or a host with a non-public address. Retrying cannot help."""


class OutboundUrlUnresolved(OutboundUrlRefused):
    """The host name does not resolve right now (maybe a DNS outage): worth retrying later."""


def _address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_global and not address.is_multicast


def _host_addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OutboundUrlUnresolved(f'The host "{host}" does not resolve.') from error
    # A scoped IPv6 address comes back as "fe80::1%eth0": the zone is not part of the address.
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def outbound_url_check(*, url: str) -> None:
    """Raises OutboundUrlRefused (or its subclass OutboundUrlUnresolved) unless `url` may be called."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as error:
        raise OutboundUrlRefused("Enter a valid URL.") from error
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise OutboundUrlRefused("Use an http:// or https:// URL with a host name.")
    if settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE:
        return
    host = parts.hostname.rstrip(".").lower()
    if host in {name.lower() for name in settings.OUTBOUND_WEBHOOK_ALLOWED_HOSTS}:
        return
    for address in _host_addresses(host, port):
        if not _address_is_public(address):
            raise OutboundUrlRefused(
                # Which address is not said: the answer would map our internal network for the caller.
                f'The host "{host}" resolves to a loopback, private or otherwise non-public address; '
                "webhooks may only call public hosts."
            )
