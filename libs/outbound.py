"""The outbound address guard: where zapq may send HTTP requests that a customer chose the address of.

A customer's webhook endpoint (and, later, a bridge URL) could point at zapq's own network: loopback, a
private range, the cloud metadata service. In ``prod`` such addresses are refused unless allowlisted
(``ZAPQ_OUTBOUND_ALLOWLIST``: hosts or CIDRs), and only ``https`` is accepted. The check runs twice: when the
URL is saved (:meth:`AddressGuard.check_url`), and at connect time (:meth:`AddressGuard.resolve`, plugged into
the HTTP transport), which resolves the name itself and connects to the address it checked — so a DNS answer
that changes between the two (rebinding) cannot slip through.

In ``dev`` and ``test`` everything is allowed (local receivers on 127.0.0.1), http included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: C0 controls and DEL: no URL holds one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: Never a customer's server: loopback, private, link-local (cloud metadata 169.254.169.254), shared,
#: reserved, documentation, multicast and translation ranges (Svix's and smokescreen's lists).
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "100::/64",
        "2001::/32",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",
        "5f00::/16",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


class BlockedAddressError(OSError):
    """A URL or the address it resolves to is not allowed (an ``OSError``: the transport reports it as a
    connection error, so a delivery to it is a failed attempt, never a request)."""


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # checked as the IPv4 address it carries
    return address


@dataclass(frozen=True)
class AddressGuard:
    """Which outbound addresses are allowed (see the module docstring)."""

    #: Refuse private and special addresses (``prod``).
    block_private: bool = True
    #: Only ``https`` URLs (``prod``).
    require_https: bool = True
    #: Hosts (exact, lower case) and networks that are allowed although private.
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def for_environment(cls, env: str, allowlist: Iterable[str] = ()) -> AddressGuard:
        """The guard of ``env``: strict in ``prod``, open in ``dev`` and ``test``; ``allowlist`` holds hosts
        and CIDRs."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in allowlist):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower())
        strict = env == "prod"
        return cls(
            block_private=strict,
            require_https=strict,
            allowed_hosts=frozenset(hosts),
            allowed_networks=tuple(networks),
        )

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raise :class:`BlockedAddressError` when ``address`` (which ``host`` resolved to) is not allowed."""
        if not self.block_private or host.lower() in self.allowed_hosts:
            return
        if any(address in network for network in self.allowed_networks):
            return
        if any(address in network for network in BLOCKED_NETWORKS):
            raise BlockedAddressError(f"{host} resolves to {address}, a private or reserved address")

    def check_url(self, url: str) -> None:
        """Check ``url`` as far as possible without DNS: scheme, host present, a literal address's range.

        Raises ``ValueError`` with the reason (the API answers 422).
        """
        if _CONTROL.search(url):  # urlsplit would drop some silently, httpx refuses them all when it connects
            raise ValueError("the URL holds a control character")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("the URL must start with https:// (or http:// outside prod)")
        if self.require_https and parts.scheme != "https":
            raise ValueError("only https URLs are accepted")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        if any(c.isspace() for c in parts.hostname):
            raise ValueError("the URL's host holds a space")
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise ValueError("the URL's port is not a number from 0 to 65535") from None
        if parts.username or parts.password:
            raise ValueError("credentials in the URL are not accepted")
        literal = _address(parts.hostname)
        if literal is not None:
            try:
                self.check_address(parts.hostname, literal)
            except BlockedAddressError as exc:
                raise ValueError(str(exc)) from None

    async def check_url_resolved(self, url: str) -> None:
        """:meth:`check_url`, then resolve the host and check every address it has (save time)."""
        self.check_url(url)
        parts = urlsplit(url)
        assert parts.hostname is not None
        if not self.block_private:
            return
        try:
            await self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        except BlockedAddressError as exc:
            raise ValueError(str(exc)) from None
        except OSError as exc:
            raise ValueError(f"{parts.hostname} does not resolve: {exc}") from None

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: resolved here and checked, so the connection goes to an
        address that passed (raises :class:`BlockedAddressError`, or ``OSError`` when it does not resolve)."""
        literal = _address(host)
        if literal is not None:
            self.check_address(host, literal)
            return str(literal)
        if not self.block_private:
            return host
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        allowed: list[str] = []
        refusal: BlockedAddressError | None = None
        for *_, sockaddr in infos:
            address = _address(str(sockaddr[0]))
            if address is None:
                continue
            try:
                self.check_address(host, address)
            except BlockedAddressError as exc:
                refusal = exc
                continue
            allowed.append(str(address))
        if refusal is not None:  # one bad address is enough to refuse: round-robin DNS could pick it later
            raise refusal
        if not allowed:
            raise OSError(f"{host} has no usable address")
        return allowed[0]
