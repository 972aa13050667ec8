"""Ingest's analysis on a Ray cluster: long-lived workers, bounded in-flight work, faults handled.

The driver (the ``soundalike ingest`` process) scans, decides what needs analysis and
commits, exactly as a local ingest does; only hashing, decoding and analysis move to the
cluster.  Each worker is a Ray actor that loads the analyzer once and analyzes one file
per call (the pipeline's ``analyze_file``, reading the file by its path:
the cluster must see the same paths, as on shared storage).  The driver keeps at most
``depth`` calls in flight per worker (back-pressure: a 600,000-file folder never becomes
600,000 queued tasks or results held in the object store), and takes results as they
finish, in any order: every result ready at once goes to the committing side together
(one group commit, see :class:`soundalike.ingest.pipeline.GroupCommitter`).

Faults:

- a worker process that dies (killed, out of memory, a decoder crashing it) fails the
  calls it had in flight; those files go back to the queue and run on another worker,
  and a replacement worker is started while the cluster has room for it.  A file that
  was in flight at two worker deaths is recorded as an error (``WorkerCrash``), as in
  the local pool, so one poisonous file never stops the run;
- a node that leaves the cluster is the same, for every worker it held; the cluster's
  capacity is re-read and the run finishes on the nodes that remain;
- the driver killed: nothing committed is lost (a file is done once its group's
  transaction committed; the group being committed is lost whole and done again) and
  running ingest again finishes the rest; Ray removes the dead driver's workers itself.

Each file's result is committed at most once (a result for a path already committed is
dropped), so every file ends up in the catalog exactly once.

Ray is imported only here, only when ``--ray`` is given.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from soundalike.errors import ConfigError, SoundalikeError

#: Calls in flight per worker: one running, one queued, so a worker never waits for the driver.
DEFAULT_DEPTH = 2
#: How many worker deaths a file may be in flight at before it is recorded as an error; the
#: last of them with the file as its worker's only one (a file in flight at a death is retried
#: by itself, so a file beside a poisonous one is never blamed).
MAX_CRASHES = 2
#: Workers that may fail to start in a row (the model cannot load on a node, say) before ingest
#: stops with the reason instead of starting more for ever.
MAX_START_FAILURES = 5

Item = tuple[str, "str | None", bool]


class RayUnavailableError(SoundalikeError):
    """Ray is not installed, or no cluster answers at the given address."""


class _Worker:
    """One analysis worker (a Ray actor): the analyzer is loaded once, in ``__init__``."""

    def __init__(self, model: str, threads: int, analysis: str, analyze_file: Callable[..., dict]):
        os.environ["SOUNDALIKE_THREADS"] = str(max(1, threads))
        import torch

        torch.set_num_threads(max(1, threads))
        # Decoders print warnings straight to fd 2; every failure comes back as data.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        from soundalike.models.zoo import load_analyzer

        self.analyzer = load_analyzer(model)
        self.analysis = analysis
        self.analyze_file = analyze_file
        import ray

        self.node = ray.util.get_node_ip_address()
        self.node_id = ray.get_runtime_context().get_node_id()

    def ready(self) -> dict[str, Any]:
        """Where this worker runs: ``{"pid", "node", "node_id"}``."""
        return {"pid": os.getpid(), "node": self.node, "node_id": self.node_id}

    def analyze(self, item: Item) -> dict[str, Any]:
        res = self.analyze_file(*item, analyzer=self.analyzer, analysis=self.analysis)
        if res["kind"] == "error" and not os.path.exists(item[0]):
            # the driver saw this path; this node does not: say where it was looked for
            res["reason"] = f"{res['reason']} (on Ray node {self.node}: is the folder shared with every node?)"
        return res


def _head(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of the head ``address`` names (for ``"auto"``: the cluster ``ray start``
    recorded on this machine, or ``$RAY_ADDRESS``); ``None`` when nothing is recorded."""
    raw = os.environ.get("RAY_ADDRESS") or address
    if raw in (None, "", "auto"):
        from ray._common.utils import get_ray_address_file

        try:
            with open(get_ray_address_file(None)) as f:
                raw = f.read().strip()
        except OSError:
            # `ray start --temp-dir X` records its address under X: find its GCS as Ray does
            from ray._private.services import find_gcs_addresses

            found = sorted(find_gcs_addresses())
            if len(found) != 1:
                return None
            raw = found[0]
    host, _, port = str(raw).removeprefix("ray://").rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _loopback(address: str | None) -> bool:
    """Whether ``address`` (or, for ``"auto"``, the cluster it finds) is on 127.0.0.1."""
    head = _head(address)
    return head is not None and head[0] in ("127.0.0.1", "localhost", "::1")


def connect(address: str | None) -> bool:
    """Connect this process to Ray; returns ``True`` when this call started the connection.

    ``address``: ``"auto"`` (the cluster that ``ray start`` runs on this machine, or
    ``$RAY_ADDRESS``), ``"HOST:PORT"`` of a cluster's head, or ``"local"`` (start a
    private one-node Ray for this run).  An already connected process is reused.
    """
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError("--ray needs Ray: pip install 'soundalike[ray]'") from exc
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = dict(log_to_driver=False, include_dashboard=False, logging_level="ERROR")
    if address in (None, "", "local"):
        ray.init(**quiet)
        return True
    head = _head(address)
    hint = "start one with `ray start --head`" if address == "auto" else "check the address"
    if head is not None:
        import socket

        # ray.init retries an unreachable head for minutes; say so at once instead
        try:
            socket.create_connection(head, timeout=5).close()
        except OSError as exc:
            raise RayUnavailableError(f"no Ray cluster at {address!r}: nothing answers on "
                                      f"{head[0]}:{head[1]} ({exc.strerror or exc}); {hint}") from exc
    if _loopback(address):
        # A cluster bound to 127.0.0.1 (``ray start --head --node-ip-address 127.0.0.1``):
        # Ray rewrites loopback addresses to the machine's outward IP unless told that
        # this is a single-machine cluster, and would then never find its GCS.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # the resolved head, not "auto": Ray would rewrite a loopback head to this machine's IP
        ray.init(address=f"{head[0]}:{head[1]}" if head is not None else address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailableError(f"no Ray cluster at {address!r} ({exc}); {hint}") from exc
    return True


def _capacity(cpus_per_worker: int) -> int:
    """Workers the cluster's alive nodes have room for."""
    import ray

    cpus = 0.0
    for node in ray.nodes():
        if node.get("Alive"):
            cpus += float(node.get("Resources", {}).get("CPU", 0.0))
    return max(0, int(cpus // cpus_per_worker))


def run(
    todo: list[Item],
    *,
    model: str,
    analysis: str,
    handle: Callable[[list[dict[str, Any]]], None],
    analyze_file: Callable[..., dict[str, Any]],
    address: str | None = "auto",
    cpus_per_worker: int = 1,
    depth: int = DEFAULT_DEPTH,
    max_workers: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    stall_timeout_s: float = 600.0,
) -> dict[str, int]:
    """Analyze ``todo`` on a Ray cluster and hand each result to ``handle`` as it arrives.

    Parameters
    ----------
    todo : ``(path, known_hash, need_analysis)`` per file, as the local pool takes them
    model : analyzer spec (name, ``NAME@PRECISION`` or a run folder every node can read)
    analysis : the analysis plan, ``"full"`` or ``"spread:N"``
    handle : called in the driver with the result dicts ready at the same time (a list:
        one group commit; one result when they come one by one); never concurrently
    analyze_file : what a worker runs per file, ``f(path, known_hash, need_analysis, *,
        analyzer, analysis) -> result dict``: the pipeline's ``analyze_file``, passed in
        so that this module need not import the pipeline that imports it
    address : see :func:`connect`
    cpus_per_worker : CPUs each worker reserves (and torch threads it runs)
    depth : calls in flight per worker
    max_workers : at most this many workers (default: as many as the cluster has room for)
    on_event : gets ``{"event": "ray-worker", "pid", "node", "node_id"}`` when a worker is
        ready and ``{"event": "ray-worker-lost", "pid", "node", "retried": [paths]}`` when one dies
    stall_timeout_s : give up (raise) when no worker is alive and none could start for this long

    Returns
    -------
    dict with ``workers_started``, ``workers_lost`` and ``retried`` counts.

    Raises
    ------
    RayUnavailableError
        Ray is missing or the cluster cannot be reached, or it has no room for a worker.
    """
    if cpus_per_worker < 1:
        raise ConfigError(f"--ray-cpus-per-worker must be >= 1, got {cpus_per_worker}")
    emit = on_event or (lambda e: None)
    started_here = connect(address)
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError

    workers: dict[Any, dict[str, Any]] = {}  # actor -> {"ready": bool, "info", "in_flight": set}
    try:
        # Crashes are handled here (retry elsewhere, then record), so Ray retries nothing itself.
        Actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=0, max_task_retries=0)(_Worker)
        queue: deque[Item] = deque(todo)
        crashes: dict[str, int] = {}
        committed: set[str] = set()
        pending_ready: dict[Any, Any] = {}  # ready() ref -> actor
        in_flight: dict[Any, tuple[Any, Item]] = {}  # analyze() ref -> (actor, item)
        stats = {"workers_started": 0, "workers_lost": 0, "retried": 0}
        limit = max_workers if max_workers is not None else None
        threads = cpus_per_worker

        seen = {"at": -1e9, "n": 0}
        start_failures: list[str] = []  # why each worker since the last good start failed to start

        def wanted() -> int:
            # the cluster's size, re-read at most every second (a GCS round trip)
            if time.monotonic() - seen["at"] > 1.0:
                seen["n"], seen["at"] = _capacity(cpus_per_worker), time.monotonic()
            n = seen["n"]
            if limit is not None:
                n = min(n, limit)
            return min(n, len(queue) + len(in_flight))

        def top_up() -> None:
            while len(workers) < wanted():
                a = Actor.remote(model, threads, analysis, analyze_file)
                workers[a] = {"ready": False, "info": None, "in_flight": set()}
                pending_ready[a.ready.remote()] = a
                stats["workers_started"] += 1

        def lose(actor) -> None:
            w = workers.pop(actor, None)
            if w is None:
                return
            stats["workers_lost"] += 1
            retried = []
            by_itself = len(w["in_flight"]) == 1
            for ref in list(w["in_flight"]):
                _, item = in_flight.pop(ref)
                path = item[0]
                n = crashes[path] = crashes.get(path, 0) + 1
                # Only a file that was the worker's one file when it died can be blamed: the
                # others in flight beside it are retried, each by itself (see dispatch).
                if n >= MAX_CRASHES and by_itself:
                    _deliver({"kind": "error", "path": path, "type": "WorkerCrash",
                              "reason": "the decoder crashed the worker process (on Ray, twice, "
                                        "the second time alone)",
                              **_stat_or_none(path)})
                else:
                    queue.appendleft(item)
                    retried.append(path)
            stats["retried"] += len(retried)
            info = w["info"] or {}
            emit({"event": "ray-worker-lost", "pid": info.get("pid"), "node": info.get("node"),
                  "retried": retried})
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - it is gone already
                pass

        ready: list[dict[str, Any]] = []  # results waiting to be committed (one group)

        def _deliver(res: dict[str, Any]) -> None:
            if res["path"] in committed:
                return  # exactly once, whatever retries happened
            committed.add(res["path"])
            ready.append(res)

        def flush() -> None:
            if ready:
                group = ready[:]
                ready.clear()
                handle(group)

        def dispatch() -> None:
            for a, w in workers.items():
                if any(crashes.get(in_flight[r][1][0]) for r in w["in_flight"]):
                    continue  # a suspect runs by itself, so that a crash names its file
                while w["ready"] and queue and len(w["in_flight"]) < depth:
                    if queue[0][0] in committed:
                        queue.popleft()
                        continue
                    suspect = bool(crashes.get(queue[0][0]))  # in flight at a crash
                    if suspect and w["in_flight"]:
                        break  # it waits for an idle worker
                    item = queue.popleft()
                    ref = a.analyze.remote(item)
                    in_flight[ref] = (a, item)
                    w["in_flight"].add(ref)
                    if suspect:
                        break

        top_up()
        if not workers and queue:
            raise RayUnavailableError("the Ray cluster has no room for a worker "
                                      f"({cpus_per_worker} CPU each); add nodes or lower --ray-cpus-per-worker")
        stalled_since: float | None = None
        while queue or in_flight:
            dispatch()
            refs = list(in_flight) + list(pending_ready)
            if not refs:
                # nobody alive or starting: wait for the cluster to make room again
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > stall_timeout_s:
                    raise RayUnavailableError(f"no Ray worker could run for {stall_timeout_s:.0f} s; "
                                              f"{len(queue)} files left (run ingest again to finish them)")
                time.sleep(0.5)
                top_up()
                continue
            done, _ = ray.wait(refs, num_returns=1, timeout=5.0)
            if not done:
                top_up()  # a node may have joined (or left: capacity is re-read)
                continue
            rest = [r for r in refs if r not in done]
            if rest:  # every other result that is ready too: they are committed together
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                done = done + more
            stalled_since = None
            for ref in done:
                if ref in pending_ready:
                    a = pending_ready.pop(ref)
                    try:
                        info = ray.get(ref, timeout=0)
                    except (RayActorError, RayTaskError, WorkerCrashedError, GetTimeoutError) as exc:
                        lose(a)
                        start_failures.append(_root_cause(exc))
                        if len(start_failures) >= MAX_START_FAILURES:
                            raise RayUnavailableError(
                                f"{len(start_failures)} Ray workers in a row failed as they started "
                                f"({start_failures[-1]}); {len(queue) + len(in_flight)} files left "
                                "(run ingest again once the workers can start)") from exc
                        top_up()
                        continue
                    start_failures.clear()
                    if a in workers:
                        workers[a]["ready"] = True
                        workers[a]["info"] = info
                        emit({"event": "ray-worker", **info})
                    continue
                if ref not in in_flight:
                    continue  # its worker was lost by an earlier ref of this round: retried or recorded
                a, item = in_flight[ref]
                try:
                    res = ray.get(ref, timeout=0)
                except (RayActorError, WorkerCrashedError):
                    lose(a)
                    top_up()
                    continue
                except RayTaskError as exc:  # analyze_file never raises; this is Ray's own failure
                    in_flight.pop(ref)
                    workers[a]["in_flight"].discard(ref)
                    res = {"kind": "error", "path": item[0], "type": "RayTaskError",
                           "reason": f"Ray could not run the analysis: {exc.cause!r}"[:500],
                           **_stat_or_none(item[0])}
                else:
                    in_flight.pop(ref)
                    workers[a]["in_flight"].discard(ref)
                _deliver(res)
            dispatch()  # the workers go on while the group commits
            flush()
            if len(workers) < wanted():
                top_up()
        return stats
    finally:
        for a in list(workers):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if started_here:
            ray.shutdown()


def _root_cause(exc: BaseException) -> str:
    """The innermost ``SomeError: message`` line of a Ray error (whose text carries the remote
    traceback), or its type's name."""
    import re

    lines = re.findall(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception)\b: .+?)\s*$", str(exc), flags=re.M)
    return lines[-1][:300] if lines else type(exc).__name__


def _stat_or_none(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
        return {"size": st.st_size, "mtime": st.st_mtime}
    except OSError:
        return {"size": None, "mtime": None}
