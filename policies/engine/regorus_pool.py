"""Parent side of the regorus evaluation workers: a small pool of child processes with a hard deadline.

Each evaluation is sent to a worker (:mod:`policies.engine.regorus_worker`); the parent waits for each
result at most ``timeout`` seconds and, past it, kills the worker (SIGKILL) and raises
:class:`EngineTimeout`: the gate blocks (fail closed) and a new worker is started on the next call. A worker
that dies (its memory limit, ``FLEETGATE_REGO_MEMORY_MB``, or a crash) gives a
:class:`PolicyEvaluationError`. Workers are started lazily, one per concurrently evaluating thread up to
``FLEETGATE_REGO_WORKERS``, and keep compiled policy sets and per-target data between calls. A forked
process (Celery prefork) starts its own workers.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from policies.engine.base import EngineError, EngineTimeout, PolicyEvaluationError

WORKER_SCRIPT = Path(__file__).with_name("regorus_worker.py")


class _Died(Exception):
    pass


class _Overran(Exception):
    pass


class EvaluationWorker:
    """One child process and the parent's view of what it holds."""

    def __init__(self, memory_mb: int, overrides: dict[str, int]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT), str(memory_mb), json.dumps(overrides)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # a crash's traceback goes to the parent's log
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # noqa: S101
        self._in = self.proc.stdin
        self._out = self.proc.stdout.fileno()
        self._buf = bytearray()
        self._pos = 0  # start of the unread bytes in _buf
        self.sets: set[str] = set()
        self.sessions: set[str] = set()
        self.drop: list[str] = []

    def send(self, header: dict[str, Any], inputs: Sequence[bytes]) -> None:
        parts = [json.dumps(header).encode()]
        parts.extend(inputs)
        try:
            self._in.write(b"".join(struct.pack(">I", len(p)) + p for p in parts))
            self._in.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise _Died from exc

    def _fill(self, n: int, deadline: float) -> None:
        """Have at least ``n`` unread bytes (from ``_pos``) in the buffer."""
        if self._pos > 1 << 20 or (self._pos and self._pos == len(self._buf)):
            del self._buf[: self._pos]
            self._pos = 0
        n += self._pos
        while len(self._buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Overran
            ready, _, _ = select.select([self._out], [], [], remaining)
            if not ready:
                raise _Overran
            chunk = os.read(self._out, max(65536, n - len(self._buf)))
            if not chunk:
                raise _Died
            self._buf.extend(chunk)

    def read_frame(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        self._fill(4, deadline)
        (size,) = struct.unpack_from(">I", self._buf, self._pos)
        self._fill(4 + size, deadline)
        start = self._pos + 4
        frame = bytes(self._buf[start : start + size])
        self._pos = start + size
        return frame

    def exit_description(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


class WorkerPool:
    def __init__(self, size: int, memory_mb: int, overrides: dict[str, int]) -> None:
        self.size = max(1, size)
        self.memory_mb = memory_mb
        self.overrides = overrides
        self._cond = threading.Condition()
        self._idle: list[EvaluationWorker] = []
        self._busy: set[EvaluationWorker] = set()
        self._pid = os.getpid()

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:  # the parent's workers are not ours to talk to
            self._pid = os.getpid()
            self._idle, self._busy = [], set()

    def acquire(self) -> EvaluationWorker:
        with self._cond:
            self._check_fork()
            while not self._idle and len(self._busy) >= self.size:
                self._cond.wait()
            if self._idle:
                worker = self._idle.pop()
                self._busy.add(worker)
                return worker
            try:
                worker = EvaluationWorker(self.memory_mb, self.overrides)
            except OSError as exc:
                raise EngineError(
                    f"regorus: could not start an evaluation worker: {exc}", engine="regorus"
                ) from exc
            self._busy.add(worker)
            return worker

    def release(self, worker: EvaluationWorker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._cond:
            self._busy.discard(worker)
            if healthy and os.getpid() == self._pid:
                self._idle.append(worker)
            self._cond.notify()

    def forget_session(self, session_id: str) -> None:
        with self._cond:
            for worker in [*self._idle, *self._busy]:
                if session_id in worker.sessions:
                    worker.sessions.discard(session_id)
                    worker.drop.append(session_id)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def run(
        self,
        *,
        op: str,
        target: str,
        set_spec: dict[str, Any],
        session: dict[str, str] | None,
        inputs: Sequence[bytes],
        timeout: float,
        describe: Callable[[str], str] = str,
    ) -> list[bytes]:
        """Evaluate ``target`` (a rule path, or a query) for each input; the JSON text of each result.

        ``set_spec`` holds ``digest`` plus the definition (modules, data, inventory, fleetgate); ``session``
        holds ``id``, ``inventory`` and ``fleetgate`` JSON text. Raises EngineTimeout when one evaluation
        takes longer than ``timeout`` (the worker is killed), PolicyEvaluationError for a Rego error or a
        dead worker."""
        if not inputs:
            return []
        worker = self.acquire()
        healthy = False
        try:
            for _ in range(3):
                digest = set_spec["digest"]
                header: dict[str, Any] = {
                    "op": op,
                    "rule" if op == "eval" else "query": target,
                    "count": len(inputs),
                    "set": set_spec if digest not in worker.sets else {"digest": digest},
                    "session": None,
                    "drop": worker.drop,
                }
                if session is not None:
                    known = session["id"] in worker.sessions
                    header["session"] = {"id": session["id"]} if known else session
                worker.drop = []
                worker.send(header, inputs)
                worker.sets.add(digest)
                if session is not None:
                    worker.sessions.add(session["id"])
                results: list[bytes] = []
                missing = False
                for _i in range(len(inputs)):
                    frame = worker.read_frame(timeout)
                    kind, body = frame[:1], frame[1:]
                    if kind == b"R":
                        results.append(body)
                    elif kind == b"E":
                        healthy = True
                        raise PolicyEvaluationError(
                            "regorus: " + describe(body.decode("utf-8", "replace")), engine="regorus"
                        )
                    else:  # the worker evicted the set or the session: send them again
                        (worker.sets if body == b"set" else worker.sessions).discard(
                            digest if body == b"set" else (session or {}).get("id", "")
                        )
                        missing = True
                        break
                if not missing:
                    healthy = True
                    return results
            raise EngineError("regorus: the evaluation worker lost the policy set", engine="regorus")
        except _Overran:
            raise EngineTimeout(
                f"regorus: evaluation stopped at the {timeout:g}s limit (engine timeout)", engine="regorus"
            ) from None
        except _Died:
            _wait_briefly(worker)
            raise PolicyEvaluationError(
                f"regorus: evaluation stopped, the worker ended ({worker.exit_description()}); "
                f"it may have exceeded the {self.memory_mb} MB memory limit",
                engine="regorus",
            ) from None
        finally:
            self.release(worker, healthy)


def _wait_briefly(worker: EvaluationWorker) -> None:
    try:
        worker.proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass


_POOLS: dict[tuple[int, int], WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def get_pool(size: int, memory_mb: int, overrides: dict[str, int]) -> WorkerPool:
    """The process-wide pool for these limits (engines share workers and their caches)."""
    with _POOLS_LOCK:
        pool = _POOLS.get((size, memory_mb))
        if pool is None:
            pool = _POOLS[(size, memory_mb)] = WorkerPool(size, memory_mb, overrides)
        return pool
