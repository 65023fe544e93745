"""The regorus evaluation worker: a child process that evaluates Rego for the parent, which can kill it.

regorus has no way to interrupt an evaluation (its Python binding exposes no execution or time limit), so
evaluations run here, and the parent (:mod:`policies.engine.regorus_pool`) kills this process when one
overruns. This file runs as a script (``python -I regorus_worker.py <memory MB> <overrides JSON>``) and
imports nothing of Fleetgate but ``gofmt.py`` next to it (standard library only, loaded by path): only the
standard library and regorus. ``__fleetgate_sprintf`` is OPA's ``sprintf`` (:mod:`policies.engine.gofmt`):
the source rewrite sends it the calls whose format regorus' own ``sprintf`` mishandles.

Protocol on stdin/stdout, every frame a 4-byte big-endian length then the bytes:

* request: a JSON header, then ``count`` frames of input JSON text. Header keys: ``op`` (``eval`` or
  ``query``), ``set`` ({``digest``} plus, when the parent thinks this worker lacks it, ``modules``
  [[path, source]], ``data`` JSON text or null, ``inventory``/``fleetgate`` booleans), ``session`` (null, or
  {``id``} plus ``inventory``/``fleetgate`` JSON text when new to this worker), ``drop`` (session ids to
  forget), ``rule`` (eval) or ``query``, ``count``;
* response: per input, in order, a frame ``R`` + result JSON; or one ``E`` + message frame, which ends the
  response (the first error stops the batch); or ``M`` + ``set``/``session`` when the parent must send the
  definition again (this worker evicted or never had it).

Results are flushed at least every 20 ms while a batch runs, so the parent's deadline is per evaluation
(plus those 20 ms) without a system call per result.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
import time
from collections import OrderedDict
from typing import Any, BinaryIO

for _var in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
    os.environ.pop(_var, None)

import regorus  # noqa: E402 - after the environment is cleaned


def _load_sprintf() -> Any:
    """OPA's sprintf from gofmt.py, next to this file (the worker runs isolated: no package imports)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gofmt.py")
    spec = importlib.util.spec_from_file_location("fleetgate_gofmt", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.rego_sprintf


SPRINTF = _load_sprintf()
SPRINTF_NAME = "__fleetgate_sprintf"  # policies.engine.regorus_compat.SPRINTF_NAME

MAX_SETS = 128
MAX_SESSIONS = 16
MAX_CLONES = 256
FLUSH_EVERY = 0.02  # seconds: results are written in bursts, not one system call each
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


def read_frame(stream: BinaryIO) -> bytes:
    (size,) = struct.unpack(">I", _read_exact(stream, 4))
    return _read_exact(stream, size)


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(struct.pack(">I", len(payload)) + payload)


class _Disabled:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any) -> Any:
        raise PermissionError(f"built-in {self.name} is disabled in Fleetgate policies")


class Worker:
    def __init__(self, overrides: dict[str, int]) -> None:
        self.overrides = overrides
        self.sets: OrderedDict[str, tuple[Any, bool, bool]] = OrderedDict()
        self.sessions: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.clones: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def define(self, spec: dict[str, Any]) -> None:
        engine = regorus.Engine()
        engine.set_rego_v0(True)
        for name, nargs in self.overrides.items():
            engine.add_extension(name, nargs, _Disabled(name))
        engine.add_extension(SPRINTF_NAME, 2, SPRINTF)
        for path, source in spec["modules"]:
            engine.add_policy(path, source)
        if spec.get("data"):
            engine.add_data_json(spec["data"])
        self.sets[spec["digest"]] = (engine, bool(spec.get("inventory")), bool(spec.get("fleetgate")))
        while len(self.sets) > MAX_SETS:
            self.sets.popitem(last=False)

    def engine(self, header: dict[str, Any]) -> Any:
        """The engine for the request, or the name of what the parent must send again."""
        spec = header["set"]
        digest = spec["digest"]
        if "modules" in spec:
            self.define(spec)
        if digest not in self.sets:
            return "set"
        self.sets.move_to_end(digest)
        base, uses_inventory, uses_fleetgate = self.sets[digest]
        session = header.get("session")
        if session and "inventory" in session:
            self.sessions[session["id"]] = (session["inventory"], session["fleetgate"])
            while len(self.sessions) > MAX_SESSIONS:
                old, _ = self.sessions.popitem(last=False)
                self._forget_clones(old)
        if not session or not (uses_inventory or uses_fleetgate):
            return base
        sid = session["id"]
        if sid not in self.sessions:
            return "session"
        key = (sid, digest)
        clone = self.clones.get(key)
        if clone is None:
            inventory, fleetgate = self.sessions[sid]
            clone = base.clone()
            if uses_inventory:
                clone.add_data_json(inventory)
            if uses_fleetgate:
                clone.add_data_json(fleetgate)
            self.clones[key] = clone
            while len(self.clones) > MAX_CLONES:
                self.clones.popitem(last=False)
        return clone

    def _forget_clones(self, sid: str) -> None:
        for key in [k for k in self.clones if k[0] == sid]:
            del self.clones[key]

    def handle(self, header: dict[str, Any], inputs: list[bytes], out: BinaryIO) -> None:
        for sid in header.get("drop") or ():
            self.sessions.pop(sid, None)
            self._forget_clones(sid)
        try:
            engine = self.engine(header)
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            write_frame(out, b"E" + str(exc).encode("utf-8", "replace"))
            return
        if isinstance(engine, str):
            write_frame(out, b"M" + engine.encode())
            return
        flushed = time.monotonic()
        for text in inputs:
            try:
                engine.set_input_json(text.decode("utf-8"))
                if header["op"] == "query":
                    result = engine.eval_query_as_json(header["query"])
                else:
                    result = engine.eval_rule_as_json(header["rule"])
            except BaseException as exc:
                if isinstance(exc, _PASS_THROUGH):
                    raise
                write_frame(out, b"E" + str(exc).encode("utf-8", "replace"))
                return
            write_frame(out, b"R" + result.encode("utf-8"))
            now = time.monotonic()
            if now - flushed > FLUSH_EVERY:  # the parent sees progress; its deadline is per evaluation
                out.flush()
                flushed = now


def _mapped_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def main(argv: list[str]) -> int:
    memory_mb = int(argv[1]) if len(argv) > 1 else 0
    overrides = json.loads(argv[2]) if len(argv) > 2 else {}
    if memory_mb > 0:  # an allocation past the limit aborts this process; the parent reports it
        # regorus' allocator reserves address space up front (about 1 GiB, barely touched): the limit is
        # on what comes on top of what this process has mapped once regorus has started.
        regorus.Engine().eval_query_as_json("1")
        limit = _mapped_bytes() + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    stdin = sys.stdin.buffer
    stdout = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
    worker = Worker(overrides)
    while True:
        try:
            header = json.loads(read_frame(stdin))
            inputs = [read_frame(stdin) for _ in range(int(header.get("count", 0)))]
        except EOFError:
            return 0
        worker.handle(header, inputs, stdout)
        stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
