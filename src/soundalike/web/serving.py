"""Several server processes on one port, each with its own accept queue (``SO_REUSEPORT``).

uvicorn's ``--workers`` hands every worker the parent's one listening socket: one accept
queue that the workers race for, and the first to wake accepts every connection waiting.
With keep-alive clients that choice lasts for the whole run: measured under
``benchmarks/bench_catalog.py`` (wrk, 16 connections opened together), all 16 went to one
of the two workers and the other sat idle, so one process answered everything on its one
GIL.  Here each worker binds its own ``SO_REUSEPORT`` socket to the same address, and the
kernel spreads new connections over the workers' queues by a hash of the client address
and port (Linux; elsewhere the shared socket, as before).

The parent binds the address first (resolving port 0 and failing early on a port in use)
but never listens on it, so no connection waits there.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess, Process

#: Whether this platform spreads connections over ``SO_REUSEPORT`` sockets (Linux does;
#: macOS and the BSDs accept the option but send every connection to one socket).
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _OwnQueueServer(uvicorn.Server):
    """A worker's server: listens on a socket of its own bound to the parent's address."""

    async def startup(self, sockets=None) -> None:
        if sockets:
            own = []
            for shared in sockets:
                host, port = shared.getsockname()[:2]
                own.append(_reuse_port_socket(host, port))
                shared.close()  # the parent keeps its own; this process never listens on it
            sockets = own
        await super().startup(sockets)


class _OwnQueueProcess(Process):
    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = _OwnQueueServer(config=self.config)
        return self._server


class _OwnQueueSupervisor(Multiprocess):
    """uvicorn's supervisor (signals, health checks, restarts); its first workers listen on
    their own sockets.  A worker it replaces later (one that died, or SIGHUP) listens on the
    parent's socket, which is in the same ``SO_REUSEPORT`` group: still spread."""

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = _OwnQueueProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)


def run_workers(app: str, *, workers: int, host: str, port: int, factory: bool = True,
                log_level: str = "warning") -> None:
    """Serve the import string ``app`` from ``workers`` processes on ``host:port`` until
    interrupted, each process with its own accept queue where the platform spreads them
    (:data:`REUSE_PORT`), else uvicorn's shared socket."""
    if not REUSE_PORT:
        uvicorn.run(app, factory=factory, workers=workers, host=host, port=port, log_level=log_level)
        return
    config = uvicorn.Config(app, factory=factory, workers=workers, host=host, port=port, log_level=log_level)
    try:
        sock = _reuse_port_socket(host, port)
    except OSError as exc:
        raise SystemExit(f"soundalike serve: cannot bind {host}:{port}: {exc.strerror or exc}") from None
    try:
        _OwnQueueSupervisor(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def listening_sockets(port: int) -> int:
    """How many sockets listen on TCP ``port`` on this machine (Linux ``/proc/net/tcp*``; 0
    elsewhere): with :func:`run_workers`, one per worker ready to take connections."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        n += 1
        except OSError:
            continue
    return n
