"""Several server processes (``--num-procs``) sharing a crowd: one listening socket per process.

Bokeh binds the port once and forks; every process then accepts from that one socket, and
tornado accepts every connection waiting there in one go (up to 128). A crowd arriving together
therefore landed in whichever process woke first: 25 people opening the page at the same instant
against two processes, all 25 sessions were built in one of them (one after another on its event
loop, p95 first frame 10 s) while the other stayed idle.

:func:`install` makes the server bind its port with ``SO_REUSEPORT``; each forked process then
listens on its own socket of the same address, and the kernel spreads new connections over those
sockets by their addresses. The socket bound before the fork is shut down by the first process
that has its own (it is one socket in every process, the waiting parent included, so a
connection queued in it would never be accepted). Linux only; elsewhere, and in a single
process, nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys

__all__ = ["install"]

log = logging.getLogger(__name__)


class _PerProcess(list):
    """The sockets Bokeh bound; iterated in a forked process, that process's own twins of them.

    Bokeh hands this list to its HTTP server right after forking (``add_sockets``), in every
    process: that is the one point where the forked process can listen on a socket of its own.
    """

    def __init__(self, sockets, parent: int):
        super().__init__(sockets)
        self._parent = parent
        self._own: list[socket.socket] | None = None

    def __iter__(self):
        if os.getpid() == self._parent:
            return super().__iter__()
        if self._own is None:
            shared = list(super().__iter__())
            self._own = [_twin(s) for s in shared]
            for s in shared:
                # One socket for all the processes: stop it listening, once for all (another
                # process may have done it already).
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            log.info("process %d listens on its own socket of the port", os.getpid())
        return iter(self._own)


def _twin(sock: socket.socket) -> socket.socket:
    """A new listening socket on ``sock``'s address, in ``sock``'s reuse-port group."""
    new = socket.socket(sock.family, sock.type)
    new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        new.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    new.setblocking(False)
    new.bind(sock.getsockname())
    new.listen(128)
    return new


def install() -> None:
    """Bind the Bokeh server's port with ``SO_REUSEPORT`` and give each forked process a
    listening socket of its own (see the module). Call in the process that starts a
    multi-process server, before it starts (the routes plugin does, for ``--num-procs`` > 1)."""
    if not sys.platform.startswith("linux"):  # only Linux spreads connections over the group
        return
    import bokeh.server.server as bokeh_server
    from tornado import netutil

    if getattr(bokeh_server.bind_sockets, "_embviz", False):
        return

    def bind_sockets(address: str | None, port: int):
        sockets = netutil.bind_sockets(port=port or 0, address=address, reuse_port=True)
        return _PerProcess(sockets, os.getpid()), sockets[0].getsockname()[1]

    bind_sockets._embviz = True
    bokeh_server.bind_sockets = bind_sockets
