"""The OPA server engine, through ``opa-python-client`` (``opa_client``).

One OPA server is shared by every worker and every policy, so each prepared policy set lives in its own
namespace: its modules are pushed (``PUT /v1/policies/fleetgate/<digest>/<path>``) with their package and
every ``data`` reference moved under ``data.fleetgate_sets.s_<digest>`` (two policies that both say
``package main`` never mix; line numbers are unchanged). Static data goes to ``PUT /v1/data`` under the same
prefix. The server runs ``--v0-compatible``; v1 modules get ``import rego.v1`` on their package line.

Per-target data (``inventory``, ``fleetgate``) is written once per session to
``data.fleetgate_targets.<session id>`` and swapped in with ``with data.<prefix>.inventory as ...``, so
concurrent evaluations for different clusters do not see each other's objects.

Inputs are sent in batches: a generated rule evaluates the entry point for each element of
``input.batch`` (``with input as x``), one HTTP request per batch.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests
from opa_client.errors import DeleteDataError, DeletePolicyError, RegoParseError
from opa_client.errors import TypeException as OpaClientTypeError
from opa_client.opa import OpaClient

from policies.engine.base import (
    CompileError,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    Module,
    PolicyCompileError,
    PolicyEvaluationError,
    PolicySet,
    TestResult,
    check_target_data,
    entry_module_source,
    run_tests_generic,
    to_json,
)
from policies.engine.sandbox import forbidden_calls
from policies.engine.source import namespace_source, normalise_for_engine

SETS_ROOT = "fleetgate_sets"
TARGETS_ROOT = "fleetgate_targets"
BATCH_SIZE = 500
STRICT = {"strict-builtin-errors": True}


def _errors_from_body(body: Any, id_to_path: Mapping[str, str], default_path: str) -> list[CompileError]:
    out: list[CompileError] = []
    if not isinstance(body, dict):
        return [CompileError(default_path, 0, 0, str(body))]
    for err in body.get("errors") or []:
        loc = err.get("location") or {}
        file = loc.get("file") or ""
        path = id_to_path.get(file) or id_to_path.get(unquote(file)) or default_path
        out.append(
            CompileError(
                path,
                int(loc.get("row") or 0),
                int(loc.get("col") or 0),
                str(err.get("message", "")),
                str(err.get("code") or "rego_compile_error"),
            )
        )
    if not out:
        out.append(CompileError(default_path, 0, 0, str(body.get("message") or body)))
    return out


class OpaSession:
    def __init__(self, engine: OpaEngine, target_data: Mapping[str, Any] | None) -> None:
        self._engine = engine
        self.id = "t_" + uuid.uuid4().hex
        self._open = False
        self._data = check_target_data(target_data)
        self.store()
        self._open = True

    def store(self) -> None:
        """(Re)write this session's documents on the server (again after an OPA restart)."""
        self._engine._put_data(f"{TARGETS_ROOT}/{self.id}", self._data)

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._engine._delete_data(f"{TARGETS_ROOT}/{self.id}")
            except EngineError:
                pass  # best effort: the server may be gone; nothing else refers to this id

    def __enter__(self) -> OpaSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OpaPreparedSet:
    def __init__(self, engine: OpaEngine, policy_set: PolicySet, prefix: str) -> None:
        self._engine = engine
        self.policy_set = policy_set
        self.prefix = prefix

    def _session(self, session: Any) -> OpaSession:
        if session is None:
            return self._engine._default_session()
        if not isinstance(session, OpaSession):
            raise TypeError("an OPA prepared set needs a session opened by the OPA engine")
        return session

    def _batch(self, entrypoint: str, inputs: list[Any], session: OpaSession) -> list[list[Any]]:
        if entrypoint not in self.policy_set.entrypoints:
            raise KeyError(f"unknown entry point {entrypoint!r}")
        rule = f"{self.prefix}.fleetgate_entry.batch_{entrypoint}"
        for attempt in (1, 2):
            result = self._engine._query_rule(rule, {"session": session.id, "batch": inputs})
            if "result" in result and isinstance(result["result"], list):
                values = result["result"]
                if len(values) != len(inputs):
                    raise EngineError("opa: batch result has the wrong length", engine="opa")
                return [v if isinstance(v, list) else [] for v in values]
            if attempt == 1:  # the server lost our modules and data (restart): store them again, once
                self._engine._push(self.policy_set, force=True)
                session.store()
        raise EngineError("opa: entry point undefined after re-pushing the policy set", engine="opa")

    def evaluate(self, entrypoint: str, input: Any, session: Any = None) -> list[Any]:
        return self._batch(entrypoint, [json.loads(to_json(input))], self._session(session))[0]

    def evaluate_many(
        self, entrypoint: str, inputs_json: Sequence[str], session: Any = None
    ) -> list[list[Any]]:
        sess = self._session(session)
        out: list[list[Any]] = []
        for start in range(0, len(inputs_json), BATCH_SIZE):
            chunk = [json.loads(text) for text in inputs_json[start : start + BATCH_SIZE]]
            out.extend(self._batch(entrypoint, chunk, sess))
        return out

    def query(self, query: str, input: Any = None, session: Any = None) -> list[Any]:
        sess = self._session(session)
        expr = namespace_source(query, self.prefix)
        target = f"data.{TARGETS_ROOT}.{sess.id}"
        text = (
            f"__fg_result := [y | y := ({expr})] with data.{self.prefix}.inventory as {target}.inventory "
            f"with data.{self.prefix}.fleetgate.context as {target}.fleetgate.context"
        )
        result = self._engine._ad_hoc_query(text, json.loads(to_json(input)))
        rows = result.get("result") or []
        return rows[0].get("__fg_result", []) if rows else []


class OpaEngine:
    """Talks to one OPA server (``FLEETGATE_OPA_URL``). Thread-safe."""

    name = "opa"

    def __init__(self, url: str = "http://127.0.0.1:8181", *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"FLEETGATE_OPA_URL must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client_args = {
            "host": parts.hostname,
            "port": parts.port or (443 if parts.scheme == "https" else 80),
            "ssl": parts.scheme == "https",
            "retries": 0,  # a failed evaluation is an answer (fail closed), not something to repeat
            "timeout": timeout,
        }
        self._pid = os.getpid()
        self._opa = OpaClient(**self._client_args)
        self._pushed: set[str] = set()
        self._lock = threading.Lock()
        self._empty: OpaSession | None = None

    @property
    def _client(self) -> OpaClient:
        # A forked worker (Celery prefork) must not share the parent's pooled connections or its state.
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    self._pid = os.getpid()
                    self._opa = OpaClient(**self._client_args)
                    self._pushed = set()
                    self._empty = None
        return self._opa

    # -- HTTP with errors mapped to EngineError (fail closed)
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except requests.Timeout as exc:
            raise EngineTimeout(
                f"opa: evaluation stopped at the {self.timeout:g}s limit (engine timeout): no answer from "
                f"{self.url}",
                engine="opa",
            ) from exc
        except requests.ConnectionError as exc:
            raise EngineUnavailable(
                f"opa: cannot reach {self.url}: {exc.__class__.__name__}", engine="opa"
            ) from exc
        except requests.HTTPError as exc:
            raise PolicyEvaluationError(f"opa: {self._error_text(exc.response)}", engine="opa") from exc
        except requests.RequestException as exc:
            raise EngineError(f"opa: request failed: {exc}", engine="opa") from exc

    @staticmethod
    def _error_text(resp: requests.Response | None) -> str:
        if resp is None:
            return "no response"
        try:
            body = resp.json()
        except ValueError:
            return f"HTTP {resp.status_code}"
        errs = body.get("errors") or []
        if errs:
            first = errs[0]
            loc = first.get("location") or {}
            where = f" at line {loc.get('row')}" if loc.get("row") else ""
            return f"{first.get('code', '')}: {first.get('message', '')}{where}"
        return str(body.get("message") or body)

    def _query_rule(self, rule_path: str, input: Any) -> dict[str, Any]:
        """POST /v1/data/<rule_path> with ``input`` (already JSON-clean).

        ``strict-builtin-errors``: a built-in that fails (``to_number("x")``, a bad regex) is an error of
        the whole query, so the gate blocks, as on regorus; without it OPA makes the expression undefined
        and a deny rule quietly passes. A query past ``timeout`` is abandoned: the client closes the
        connection and OPA cancels the evaluation with the request's context."""
        package, _, rule = rule_path.rpartition(".")
        result: dict[str, Any] = self._call(
            self._client.query_rule, input, package, rule, query_params=STRICT
        )
        return result

    def _ad_hoc_query(self, query: str, input: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(self._client.ad_hoc_query, query, input, query_params=STRICT)
        return result

    def _put_data(self, path: str, value: dict[str, Any]) -> None:
        try:
            self._call(self._client.update_or_create_data, json.loads(to_json(value)), path)
        except (RegoParseError, OpaClientTypeError) as exc:
            raise EngineError(f"opa: storing data at {path} failed: {exc}", engine="opa") from exc

    def _delete_data(self, path: str) -> None:
        try:
            self._call(self._client.delete_data, path)
        except DeleteDataError as exc:
            raise EngineError(f"opa: deleting data at {path} failed: {exc.message}", engine="opa") from exc

    def _put_policy(self, policy_id: str, source: str) -> dict[str, Any] | None:
        """PUT /v1/policies/<id>; None when accepted, else OPA's error document (with file/line per error).

        ``rego_compat=False``: the client must not rewrite sources; versions are handled by
        :func:`policies.engine.source.normalise_for_engine`."""
        try:
            self._call(self._client.update_policy_from_string, source, policy_id, rego_compat=False)
        except RegoParseError as exc:
            return {"code": exc.expression, "message": exc.message, "errors": exc.errors}
        return None

    def _delete_policy(self, policy_id: str) -> None:
        try:
            self._call(self._client.delete_policy, policy_id)
        except DeletePolicyError as exc:
            raise EngineError(
                f"opa: deleting policy {policy_id} failed: {exc.message}", engine="opa"
            ) from exc

    def health(self) -> bool:
        try:
            return bool(self._client.check_health())
        except Exception:
            return False

    # -- pushing modules
    def _push_modules(self, id_prefix: str, ns_prefix: str, modules: Sequence[Module]) -> list[CompileError]:
        """PUT every module; OPA compiles on each PUT, so modules that need a later one are retried."""
        forbidden = forbidden_calls(modules)
        if forbidden:  # never sent: `opa run` has no capabilities flag to disable them on the server
            return forbidden
        pending = {f"{id_prefix}/{quote(m.path, safe='._-')}": m for m in modules}
        id_to_path = {pid: m.path for pid, m in pending.items()}
        errors: dict[str, list[CompileError]] = {}
        while pending:
            progressed = False
            for pid, module in list(pending.items()):
                source = namespace_source(normalise_for_engine(module), ns_prefix)
                refused = self._put_policy(pid, source)
                if refused is None:
                    del pending[pid]
                    errors.pop(pid, None)
                    progressed = True
                else:
                    errors[pid] = _errors_from_body(refused, id_to_path, module.path)
            if not progressed:
                break
        return [e for errs in errors.values() for e in errs]

    def _prefix(self, policy_set: PolicySet) -> str:
        return f"{SETS_ROOT}.s_{policy_set.digest[:32]}"

    def _push(self, policy_set: PolicySet, *, force: bool = False) -> str:
        prefix = self._prefix(policy_set)
        digest = policy_set.digest
        with self._lock:
            if digest in self._pushed and not force:
                return prefix
        id_prefix = f"fleetgate/{digest[:32]}"
        if policy_set.data:
            self._put_data(prefix.replace(".", "/"), dict(policy_set.data))
        errors = self._push_modules(id_prefix, prefix, policy_set.modules)
        if errors:
            raise PolicyCompileError(errors, engine=self.name)
        entry = namespace_source(entry_module_source(policy_set, "fleetgate_entry"), prefix)
        target = f"data.{TARGETS_ROOT}[input.session]"
        # `with` on data costs time in OPA: only swap in the documents the set can read.
        swaps = ""
        if policy_set.reads_inventory:
            swaps += f" with data.{prefix}.inventory as t.inventory"
        if policy_set.reads_context:
            swaps += f" with data.{prefix}.fleetgate.context as t.fleetgate.context"
        batch_rules = [
            f"batch_{name} := [r |\n  t := {target}\n  some i\n  x := input.batch[i]\n"
            f"  r := ep_{name} with input as x{swaps}\n]"
            for name in policy_set.entrypoints
        ]
        entry += "\n" + "\n\n".join(batch_rules) + "\n"
        refused = self._put_policy(f"{id_prefix}/__fleetgate_entry__", entry)
        if refused is not None:
            raise PolicyCompileError(_errors_from_body(refused, {}, "__fleetgate_entry__"), engine=self.name)
        with self._lock:
            self._pushed.add(digest)
        return prefix

    def _default_session(self) -> OpaSession:
        with self._lock:
            session = self._empty
        if session is None:
            session = OpaSession(self, None)
            with self._lock:
                self._empty = session
        return session

    # -- protocol
    def check(self, modules: Sequence[Module]) -> list[CompileError]:
        if not modules:
            return [CompileError("", 0, 0, "no Rego modules given")]
        token = uuid.uuid4().hex
        id_prefix = f"fleetgate-check/{token}"
        try:
            return self._push_modules(id_prefix, f"fleetgate_check.c_{token}", modules)
        finally:
            for module in modules:
                try:
                    self._delete_policy(f"{id_prefix}/{quote(module.path, safe='._-')}")
                except EngineError:
                    pass

    def prepare(self, policy_set: PolicySet) -> OpaPreparedSet:
        return OpaPreparedSet(self, policy_set, self._push(policy_set))

    def open_session(self, target_data: Mapping[str, Any] | None = None) -> OpaSession:
        return OpaSession(self, target_data)

    def run_tests(self, modules: Sequence[Module], data: Mapping[str, Any] | None = None) -> list[TestResult]:
        return run_tests_generic(self, modules, data)

    def close(self) -> None:
        if self._empty is not None:
            self._empty.close()
            self._empty = None
        self._client.close_connection()
