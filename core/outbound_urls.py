"""Which URLs our servers may call on a tenant's behalf (SSRF guard).

A tenant admin chooses the scheduler's `webhook_url`, and our workers POST to it from inside our network.
Unless OUTBOUND_WEBHOOK_ALLOW_PRIVATE is on, such a URL must name a host whose every address is public:
not loopback, private (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254), shared, reserved
or multicast. OUTBOUND_WEBHOOK_ALLOWED_HOSTS lists host names let through anyway (an internal gateway
an operator trusts).

The URL is checked when it is set (a 400 with the reason) and again right before each request, because
what a name resolves to can change after it was accepted (DNS rebinding). The sender's connections
(`PublicAddressHTTPConnection`, `PublicAddressHTTPSConnection`) resolve the name once more as they connect,
check those addresses and connect to them, never to a fresh answer: a resolver that changes its answer
between the check and the connection cannot slip an internal address in. Redirects are never followed
by the sender, so a public URL cannot bounce a request to a private one.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

import urllib3
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


def outbound_url_check(*, url: str, allow_private: bool | None = None, allowed_hosts: list[str] | None = None) -> None:
    """Raises OutboundUrlRefused (or its subclass OutboundUrlUnresolved) unless `url` may be called.
    `allow_private` and `allowed_hosts` default to the webhooks' settings; attachments pass their own."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as error:
        raise OutboundUrlRefused("Enter a valid URL.") from error
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise OutboundUrlRefused("Use an http:// or https:// URL with a host name.")
    _callable_addresses(parts.hostname, port, allow_private=allow_private, allowed_hosts=allowed_hosts)


def _callable_addresses(
    host: str, port: int, *, allow_private: bool | None = None, allowed_hosts: list[str] | None = None
) -> list[str] | None:
    """The addresses of `host`, resolved once, if every one may be called; None when no check applies
    (OUTBOUND_WEBHOOK_ALLOW_PRIVATE, or a host in OUTBOUND_WEBHOOK_ALLOWED_HOSTS). Raises OutboundUrlRefused
    or OutboundUrlUnresolved."""
    if settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE if allow_private is None else allow_private:
        return None
    host = host.rstrip(".").lower()
    if allowed_hosts is None:
        allowed_hosts = settings.OUTBOUND_WEBHOOK_ALLOWED_HOSTS
    if host in {name.lower() for name in allowed_hosts}:
        return None
    addresses = _host_addresses(host, port)
    for address in addresses:
        if not _address_is_public(address):
            raise OutboundUrlRefused(
                # Which address is not said: the answer would map our internal network for the caller.
                f'The host "{host}" resolves to a loopback, private or otherwise non-public address; '
                "webhooks may only call public hosts."
            )
    return [str(address) for address in addresses]


class OutboundAddressRefused(urllib3.exceptions.HTTPError):
    """A new connection's host resolved to a non-public address as it connected: nothing was sent. Not an
    OSError or a urllib3 timeout, so urllib3 passes it through as it is, unretried."""


class _PublicAddressConnection:
    """Connects to the addresses it has just checked, by number: the name is resolved once per connection, and
    what the check saw is what is connected to. The Host header, TLS's server name and certificate check keep
    the name."""

    def _new_conn(self):
        name = self._dns_host
        try:
            addresses = _callable_addresses(name.strip("[]"), self.port)
        except OutboundUrlUnresolved as error:
            raise urllib3.exceptions.NameResolutionError(name, self, socket.gaierror(str(error))) from error
        except OutboundUrlRefused as error:
            raise OutboundAddressRefused(str(error)) from error
        if addresses is None:
            return super()._new_conn()
        failure = None
        for address in addresses:
            # urllib3 connects to `_dns_host` (and `host` reads it): set to the checked address for the connect
            # only, so that the Host header and TLS that follow still use the name.
            self._dns_host = address
            try:
                return super()._new_conn()
            except urllib3.exceptions.NewConnectionError as error:
                failure = error
            finally:
                self._dns_host = name
        raise failure


class PublicAddressHTTPConnection(_PublicAddressConnection, urllib3.connection.HTTPConnection):
    pass


class PublicAddressHTTPSConnection(_PublicAddressConnection, urllib3.connection.HTTPSConnection):
    pass
