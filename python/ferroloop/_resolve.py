"""Address resolution for socket operations: numeric addresses are used as
they are, without a trip through the executor; names go through
``loop.getaddrinfo`` as asyncio does."""

from __future__ import annotations

import socket

_HAS_IPV6 = hasattr(socket, "AF_INET6")
_PROTO_FOR_TYPE = {socket.SOCK_STREAM: socket.IPPROTO_TCP, socket.SOCK_DGRAM: socket.IPPROTO_UDP}


def _numeric_port(port):
    if port is None or port == b"" or port == "":
        return 0
    try:
        return int(port)
    except (TypeError, ValueError):
        return None  # a service name such as "http": getaddrinfo knows it


def numeric_addrinfo(host, port, family, type, proto, flowinfo=0, scopeid=0):
    """One getaddrinfo-shaped entry when ``host`` is already an IP address
    (and nothing else needs the resolver), else None."""
    if host is None or proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    proto = _PROTO_FOR_TYPE.get(type)
    if proto is None:
        return None
    port = _numeric_port(port)
    if port is None:
        return None
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        return None  # IPv6 zone ids are not understood by inet_pton
    if family == socket.AF_UNSPEC:
        families = (socket.AF_INET, socket.AF_INET6) if _HAS_IPV6 else (socket.AF_INET,)
    else:
        families = (family,)
    for af in families:
        try:
            socket.inet_pton(af, host)
        except (OSError, ValueError):
            continue
        if _HAS_IPV6 and af == socket.AF_INET6:
            return af, type, proto, "", (host, port, flowinfo, scopeid)
        return af, type, proto, "", (host, port)
    return None


async def ensure_resolved(loop, address, *, family=0, type=socket.SOCK_STREAM, proto=0, flags=0):
    host, port = address[:2]
    info = numeric_addrinfo(host, port, family, type, proto, *address[2:])
    if info is not None:
        return [info]
    return await loop.getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)
