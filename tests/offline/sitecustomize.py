"""Refuse network connections outside this machine, in the test process and every Python process it starts.

The test suite puts this folder first on ``PYTHONPATH``, so Python imports this file at
start-up (as ``sitecustomize``) in every subprocess too: a test that would download
something fails at once, naming the address, instead of depending on the network.
"""

from __future__ import annotations

import ipaddress
import socket

_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


class RemoteConnectionError(OSError):
    """A test tried to reach a host other than this machine."""


def is_local(address: object) -> bool:
    """Whether ``address`` (a socket address of any family) stays on this machine."""
    if isinstance(address, (str, bytes)):  # a Unix socket's path
        return True
    return is_local_host(address[0])


def is_local_host(host: object) -> bool:
    """Whether ``host`` (a name or an address) is this machine: looking it up asks no name server."""
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", "", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def _checked(connect):
    def guarded(self: socket.socket, address: object):
        if not is_local(address):
            raise RemoteConnectionError(f"the tests refuse a connection to {address!r}: only localhost is reachable "
                                        "from a test; give the test local files instead of a download")
        return connect(self, address)

    return guarded


def _checked_lookup(host: object, *arguments, **options):
    if host is not None and not is_local_host(host):
        raise RemoteConnectionError(f"the tests refuse to look up {host!r}: only localhost is reachable from a "
                                    "test; give the test local files instead of a download")
    return _getaddrinfo(host, *arguments, **options)


socket.getaddrinfo = _checked_lookup
socket.socket.connect = _checked(_connect)
socket.socket.connect_ex = _checked(_connect_ex)
