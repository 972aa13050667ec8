"""Several server processes on one port, each connection handed to the least busy worker.

uvicorn's ``--workers`` hands every worker the parent's one listening socket: one accept
queue that the workers race for, and the first to wake accepts every connection waiting.
With keep-alive clients that choice lasts for the whole run: measured under
``benchmarks/bench_catalog.py`` (wrk, 16 connections opened together), all 16 went to one
of the two workers and the other sat idle, so one process answered everything on its one
GIL.  One ``SO_REUSEPORT`` socket per worker (what serve did next) spreads connections by a
hash of the client's address and port: 16 connections split 10/6 in most runs, and the
worker with 10 answers each of them 1.7x later than the other, which is where the p99 went.

So here the parent process listens and accepts, and hands each new connection (its file
descriptor, over a Unix socket: ``SCM_RIGHTS``) to the worker that holds the fewest open
connections at that moment: 16 connections split 8/8.  Each worker runs uvicorn's own
HTTP protocol on the connections it is given and reports each one it closes, so the
parent's counts stay true when clients come and go.  Accepting costs the parent one
``accept`` and one ``sendmsg`` per *connection* (not per request); a request never passes
through it.

The parent binds the address first (resolving port 0 and failing early on a port in use)
and listens only once every worker is ready, so the listening socket is the sign that the
server is up.  A worker that dies is replaced on the same channel (uvicorn's supervisor
checks, as before); connections it held are gone with it, new ones go to the others until
the replacement is ready.  Elsewhere than Linux (no ``SCM_RIGHTS`` guarantee on every
platform uvicorn runs on) serve falls back to uvicorn's shared socket.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import sys
import threading

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

logger = logging.getLogger("soundalike.serve")

#: Whether this platform hands connections to workers from the parent (Linux).
BALANCED = sys.platform.startswith("linux") and hasattr(socket, "send_fds")

#: Messages on a worker's channel (a ``SOCK_SEQPACKET`` pair: one message, one record).
#: parent -> worker: a connection (its descriptor rides along); worker -> parent: ready,
#: or one connection closed.
_CONN, _READY, _CLOSED = b"c", b"r", b"-"


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class _ChannelServer(uvicorn.Server):
    """A worker's server: it listens on nothing; its connections come over the channel."""

    async def startup(self, sockets=None) -> None:
        chans = [s for s in sockets or () if s.family == socket.AF_UNIX]
        if not chans:  # not started by the balancing supervisor: a plain uvicorn worker
            await super().startup(sockets)
            return
        self._chan = chan = chans[0]
        chan.setblocking(False)
        await super().startup([])  # lifespan, state; no listener of its own
        if self.should_exit or not self.started:
            return
        loop = asyncio.get_running_loop()
        config, state, app_state = self.config, self.server_state, self.lifespan.state

        class Counted(config.http_protocol_class):  # uvicorn's protocol, reporting its close
            def connection_lost(self, exc):
                super().connection_lost(exc)
                try:
                    chan.send(_CLOSED)
                except OSError:  # the parent is gone or busy: its count is a hint only
                    pass

        def protocol():
            return Counted(config=config, server_state=state, app_state=app_state, _loop=loop)

        def receive() -> None:
            while True:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(chan, 16, 1)
                except BlockingIOError:
                    return
                except OSError:
                    msg, fds = b"", []
                if not msg:  # the parent closed the channel: it is shutting down
                    loop.remove_reader(chan.fileno())
                    self.should_exit = True
                    return
                for fd in fds:
                    conn = socket.socket(fileno=fd)
                    loop.create_task(self._adopt(loop, protocol, conn))

        loop.add_reader(chan.fileno(), receive)
        chan.send(_READY)

    async def _adopt(self, loop, protocol, conn: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(protocol, conn, ssl=self.config.ssl)
        except OSError:  # the client left before this worker got to it
            conn.close()
            try:
                self._chan.send(_CLOSED)
            except OSError:
                pass

    async def shutdown(self, sockets=None) -> None:
        chan = getattr(self, "_chan", None)
        if chan is not None and chan.fileno() >= 0:
            try:
                asyncio.get_running_loop().remove_reader(chan.fileno())
            except (ValueError, OSError):
                pass
        await super().shutdown(sockets)


class _ChannelProcess(Process):
    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = _ChannelServer(config=self.config)
        return self._server


class _Slot:
    """One worker's place: its channel (kept across restarts) and the parent's count."""

    def __init__(self) -> None:
        self.parent, self.child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.parent.setblocking(False)
        self.open = 0  # connections handed over and not yet reported closed
        self.ready = False


class _Dispatcher:
    """The parent's accept loop (a thread): each connection to the least busy ready worker."""

    def __init__(self, listener: socket.socket, slots: list[_Slot], backlog: int) -> None:
        self.listener, self.slots, self.backlog = listener, slots, backlog
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.listening = False
        self.next = 0  # ties go round the workers
        self.thread = threading.Thread(target=self._run, name="soundalike-accept", daemon=True)

    def restarted(self, slot: _Slot) -> None:
        with self.lock:
            slot.open, slot.ready = 0, False

    def _candidates(self) -> list[int]:
        """Ready slots, fewest open connections first; ties go round the workers."""
        n = len(self.slots)
        ready = [i for i, s in enumerate(self.slots) if s.ready]
        return sorted(ready, key=lambda i: (self.slots[i].open, (i - self.next) % n))

    def _hand_over(self, conn: socket.socket) -> None:
        # as asyncio and uvloop do for the connections they accept themselves: a response's
        # head and body are two writes, and Nagle would hold the body back until the
        # client's delayed ACK (up to 40 ms on loopback: half the requests/s under wrk)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.lock:
            for i in self._candidates():
                slot = self.slots[i]
                slot.open += 1  # counted before the worker can see it (and report its close)
                try:
                    socket.send_fds(slot.parent, [_CONN], [conn.fileno()])
                except OSError:  # its channel is full or its worker gone: the next one
                    slot.open -= 1
                    continue
                self.next = (i + 1) % len(self.slots)
                conn.close()  # the worker holds it now
                return
        logger.warning("no worker could take a connection: closed")
        conn.close()

    def _messages(self, slot: _Slot) -> None:
        while True:
            try:
                msg = slot.parent.recv(16)
            except BlockingIOError:
                return
            except OSError:
                return
            if not msg:
                return
            with self.lock:
                if msg == _READY:
                    slot.ready = True
                elif msg == _CLOSED:
                    slot.open = max(0, slot.open - 1)
            if not self.listening and all(s.ready for s in self.slots):
                self.listener.listen(self.backlog)  # every worker is up: take connections
                self.listening = True

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        self.listener.setblocking(False)
        sel.register(self.listener, selectors.EVENT_READ, None)
        for slot in self.slots:
            sel.register(slot.parent, selectors.EVENT_READ, slot)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.5):
                if key.data is not None:
                    self._messages(key.data)
                    continue
                while self.listening:
                    try:
                        conn, _ = self.listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:  # e.g. out of descriptors: try again shortly
                        logger.warning("accept failed: %s", exc)
                        break
                    self._hand_over(conn)
        sel.close()


class _BalancingSupervisor(Multiprocess):
    """uvicorn's supervisor (signals, health checks, restarts) over workers that take their
    connections from the parent's :class:`_Dispatcher`, one channel per worker slot."""

    def __init__(self, config: uvicorn.Config, listener: socket.socket) -> None:
        super().__init__(config, sockets=[])
        self.slots = [_Slot() for _ in range(self.processes_num)]
        self.dispatcher = _Dispatcher(listener, self.slots, config.backlog)

    def _spawn(self, slot: _Slot) -> Process:
        process = _ChannelProcess(self.config, [slot.child])
        process.start()
        return process

    def init_processes(self) -> None:
        self.dispatcher.thread.start()
        self.processes = [self._spawn(slot) for slot in self.slots]

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # every restart would fail the same way
                logger.error("worker [%s] failed to start, stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("worker [%s] died; starting another", process.pid)
            self.dispatcher.restarted(self.slots[idx])
            self.processes[idx] = self._spawn(self.slots[idx])

    def restart_all(self) -> None:  # SIGHUP: each slot's new worker, then the old one goes
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._spawn(self.slots[idx])
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                self.processes[idx] = old
                logger.error("new worker [%s] was not ready in time; keeping [%s]", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[idx] = new

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN: the number of workers is fixed by --workers here")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU: the number of workers is fixed by --workers here")

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.dispatcher.stop.set()
            self.dispatcher.thread.join(timeout=5)
            for slot in self.slots:
                slot.parent.close()
                slot.child.close()


def run_workers(app: str, *, workers: int, host: str, port: int, factory: bool = True,
                log_level: str = "warning") -> None:
    """Serve the import string ``app`` from ``workers`` processes on ``host:port`` until
    interrupted, each new connection handed to the worker with the fewest open ones
    (:data:`BALANCED` platforms; elsewhere uvicorn's shared socket)."""
    if not BALANCED:
        uvicorn.run(app, factory=factory, workers=workers, host=host, port=port, log_level=log_level)
        return
    config = uvicorn.Config(app, factory=factory, workers=workers, host=host, port=port, log_level=log_level)
    try:
        listener = _bound_socket(host, port)
    except OSError as exc:
        raise SystemExit(f"soundalike serve: cannot bind {host}:{port}: {exc.strerror or exc}") from None
    try:
        _BalancingSupervisor(config, listener).run()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


def listening_sockets(port: int) -> int:
    """How many sockets listen on TCP ``port`` on this machine (Linux ``/proc/net/tcp*``; 0
    elsewhere): with :func:`run_workers`, one once every worker is ready."""
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
