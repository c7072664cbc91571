"""Who a request comes from: the key of rate limits and of the queue's fair share.

A client is the address that connected, unless that address is a proxy the operator named in ``TRUSTED_PROXIES``
(addresses or networks). Only then is ``X-Forwarded-For`` read, from its right: each proxy appends the address it
saw, so the first entry from the right that is not a trusted proxy is the client. Anything a client writes into the
header itself sits to the left of that and is never believed; a value that is not an address ends the walk.
"""

from __future__ import annotations

import ipaddress

from flask import current_app, request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` ("10.0.0.5, 172.16.0.0/12") as networks; a ValueError names a wrong entry."""
    networks = []
    for entry in (part.strip() for part in (text or "").split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an IP address or network") from None
    return tuple(networks)


def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address, proxies: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(remote_addr: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The client's address, as the module docstring says."""
    remote = remote_addr or "unknown"
    if not _trusted(_address(remote), proxies):
        return remote
    for hop in reversed((forwarded_for or "").split(",")):
        address = _address(hop)
        if address is None:
            break
        if not _trusted(address, proxies):
            return str(address)
    return remote


def current_client() -> str:
    """The address of the client of the request being handled."""
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                          current_app.config["TRUSTED_PROXY_NETWORKS"])
