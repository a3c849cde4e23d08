"""What every array emulator shares: serving, counting, faults, persistence, fabric pushes.

A vendor emulator subclasses :class:`ArrayEmulator` and supplies its REST routes, its error
body, its seed logic and its fabric. The base class serves them over HTTPS and adds the
lab-only endpoints documented in ``lab/README.md``:

- ``GET /lab/fabric``  what hosts can see (lab.fabric.Fabric);
- ``GET /lab/state``   the array's objects as JSON;
- ``GET|DELETE /lab/calls``  counts of API operations served, keyed ``METHOD /path/{}``;
- ``GET /lab/calls/log?since=SEQ``  each call with its start, end and HTTP status (DELETE
  ``/lab/calls`` clears it too);
- ``GET|POST|DELETE /lab/faults``  injected failures and delays;
- ``GET|POST|DELETE /lab/latency``  delays for every call of some operations, until removed;
- ``POST /lab/sessions/expire``  what a vendor does when its sessions expire;
- ``POST /lab/seed``   create the production volumes of a fresh array (lab.fabric.SeedSpec).

When it starts, an emulator pushes its fabric to the vCenter (a restarted array's exports
come back on the hosts without waiting for a call or a rescan).

Vendor handlers run one at a time under the emulator's lock (a real array serialises a
session's requests too); injected delays (fault rules and latency rules) are served outside
the lock, so delayed calls overlap.

Times in the call log are seconds since the epoch (floats), taken around the whole call:
from its arrival to its answer, injected delays included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import requests
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lab.fabric import Fabric, SeedSpec

log = logging.getLogger("lab.arrays")

_PARAM = re.compile(r"\{[^}]+\}")

#: How many calls ``GET /lab/calls/log`` keeps (the latest ones)
MAX_CALL_LOG = 20000


class ArrayConfig(BaseModel):
    """How one emulator process is configured (written by ``lab up``)."""

    name: str
    vendor: Literal["hpe_primera", "netapp_ontap"]
    host: str = "127.0.0.1"
    port: int
    cert: str
    key: str
    ca_bundle: str
    state_dir: str
    user: str
    password: str
    notify_urls: list[str] = Field(default_factory=list)
    serial: str
    model: str
    iscsi_portals: list[str] = Field(default_factory=list)  # data IPs for iSCSI targets
    nfs_addresses: list[str] = Field(default_factory=list)  # data IPs serving NFS
    fc_ports: int = 0  # number of FC target ports
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Call:
    """One decoded API request handed to a vendor handler."""

    method: str
    path: str
    params: dict[str, str]
    query: QueryParams
    headers: Headers
    body: Any
    raw_body: bytes
    client: str


class HttpError(Exception):
    """Raised by a vendor handler to answer with ``response`` (the vendor's error body)."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


class FaultRule(BaseModel):
    """``POST /lab/faults`` body: fail and/or delay the next calls of one operation."""

    operation: str
    error: int | None = None  # HTTP status, answered with the vendor's error body
    times: int | None = Field(default=None, ge=1)  # None: every call
    delay_s: float = Field(default=0.0, ge=0)


class FaultRules:
    """Thread-safe set of fault rules, consumed call by call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[dict[str, Any]] = []

    def add(self, rule: FaultRule) -> None:
        """Add a rule; rules for the same operation apply in the order they were added."""
        with self._lock:
            self._rules.append(rule.model_dump())

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the rules still in force."""
        with self._lock:
            return [dict(r) for r in self._rules]

    def take(self, operation: str) -> tuple[float, int | None]:
        """Consume one use of the first rule for ``operation``: (delay seconds, error status)."""
        with self._lock:
            for rule in self._rules:
                if rule["operation"] != operation:
                    continue
                if rule["times"] is not None:
                    rule["times"] -= 1
                    if rule["times"] <= 0:
                        self._rules.remove(rule)
                return rule["delay_s"], rule["error"]
        return 0.0, None


class LatencyRule(BaseModel):
    """One rule of ``POST /lab/latency``: delay every call of ``operation`` by ``delay_s``."""

    operation: str
    delay_s: float = Field(ge=0)  # 0 removes the operation's latency


class LatencyRequest(BaseModel):
    """``POST /lab/latency`` body: ``{"rules": [{"operation", "delay_s"}, ...]}``."""

    rules: list[LatencyRule]


class LatencyRules:
    """Thread-safe delays per operation; unlike fault rules they are not consumed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delays: dict[str, float] = {}

    def update(self, rules: list[LatencyRule]) -> None:
        """Set each rule's operation to its delay (replacing an earlier one; 0 removes it)."""
        with self._lock:
            for rule in rules:
                if rule.delay_s > 0:
                    self._delays[rule.operation] = rule.delay_s
                else:
                    self._delays.pop(rule.operation, None)

    def clear(self) -> None:
        """Remove every delay."""
        with self._lock:
            self._delays.clear()

    def delay(self, operation: str) -> float:
        """Return the seconds every call of ``operation`` waits (0 when none is set)."""
        with self._lock:
            return self._delays.get(operation, 0.0)

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the rules in force, sorted by operation."""
        with self._lock:
            return [{"operation": op, "delay_s": d} for op, d in sorted(self._delays.items())]


class CallLog:
    """The latest API calls: operation, path, start, end and HTTP status of each.

    An entry is added when a call arrives (``end`` and ``status`` are None until it is
    answered); ``seq`` numbers keep growing when the log is cleared.
    """

    def __init__(self, keep: int = MAX_CALL_LOG) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        self._seq = 0

    def begin(self, operation: str, path: str) -> dict[str, Any]:
        """Record that a call of ``operation`` on ``path`` arrived now; return its entry."""
        with self._lock:
            self._seq += 1
            entry: dict[str, Any] = {
                "seq": self._seq,
                "operation": operation,
                "path": path,
                "start": time.time(),
                "end": None,
                "status": None,
            }
            self._entries.append(entry)
            return entry

    def end(self, entry: dict[str, Any], status: int) -> None:
        """Record that the call of ``entry`` was answered now with HTTP ``status``."""
        with self._lock:
            entry["end"] = time.time()
            entry["status"] = status

    def since(self, seq: int, operation: str | None = None) -> dict[str, Any]:
        """Return ``{"last_seq", "calls"}``: the calls after ``seq`` (of ``operation`` only,
        when given), oldest first."""
        with self._lock:
            calls = [
                dict(e)
                for e in self._entries
                if e["seq"] > seq and (operation is None or e["operation"] == operation)
            ]
            return {"last_seq": self._seq, "calls": calls}

    def clear(self) -> None:
        """Forget every entry (sequence numbers go on from where they were)."""
        with self._lock:
            self._entries.clear()


class ContentStore:
    """Directories that hold volume, snapshot and clone content (real files)."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, content_id: str) -> Path:
        """Return the directory of ``content_id`` (it may not exist)."""
        return self.root / content_id

    def create(self, content_id: str, source: str | Path | None = None) -> Path:
        """Create ``content_id`` empty, or as a copy of the directory ``source``."""
        dst = self.path(content_id)
        if dst.exists():
            shutil.rmtree(dst)
        if source is None:
            dst.mkdir(parents=True)
        else:
            shutil.copytree(source, dst, symlinks=True)
        return dst

    def copy(self, src_id: str, dst_id: str) -> Path:
        """Create ``dst_id`` as a copy of ``src_id`` (a snapshot or a clone)."""
        return self.create(dst_id, self.path(src_id))

    def remove(self, content_id: str) -> None:
        """Delete ``content_id``; missing content is not an error."""
        shutil.rmtree(self.path(content_id), ignore_errors=True)


@dataclass
class _Endpoint:
    method: str
    path: str
    handler: Callable[[Call], Response]
    operation: str = field(init=False)

    def __post_init__(self) -> None:
        self.operation = f"{self.method} {_PARAM.sub('{}', self.path)}"


class ArrayEmulator:
    """Base of the vendor emulators; subclasses fill in the vendor-specific parts."""

    vendor: ClassVar[str]

    def __init__(self, config: ArrayConfig):
        self.config = config
        self.lock = threading.RLock()
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.content = ContentStore(self.state_dir / "content")
        self.rules = FaultRules()
        self.latency = LatencyRules()
        self.call_log = CallLog()
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._fabric_dirty = False
        self._push_lock = threading.Lock()
        self._push_session = requests.Session()
        self._push_session.trust_env = False  # loopback only: never through a proxy
        loaded = self._load()
        self.state: dict[str, Any] = loaded if loaded is not None else self.initial_state()
        self.state.setdefault("_fabric_generation", 0)
        self._endpoints = [_Endpoint(m, p, h) for m, p, h in self.api_routes()]

    # ---- to be provided by vendors -------------------------------------------------------

    def api_routes(self) -> list[tuple[str, str, Callable[[Call], Response]]]:
        """Return (HTTP method, path template, handler) for every vendor API call served."""
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> Response:
        """Return the vendor's error response for ``status`` (used for injected faults)."""
        raise NotImplementedError

    def initial_state(self) -> dict[str, Any]:
        """Return the state of an array that holds nothing yet."""
        raise NotImplementedError

    def seed(self, spec: SeedSpec) -> None:
        """Create the production volumes, snapshots and exports of ``spec``."""
        raise NotImplementedError

    def fabric(self) -> Fabric:
        """Return what hosts can see through this array right now (without generation)."""
        raise NotImplementedError

    def lab_state(self) -> dict[str, Any]:
        """Return the array's objects for tests (see lab/README.md for the common keys)."""
        raise NotImplementedError

    def expire_sessions(self, body: dict[str, Any]) -> dict[str, Any]:
        """Do what the vendor's array does when its sessions expire (``POST
        /lab/sessions/expire``, the lock held); return what was done. Raise ValueError for
        a body the vendor does not accept."""
        raise NotImplementedError

    # ---- helpers for vendors -----------------------------------------------------------------

    def mark_fabric_changed(self) -> None:
        """Record that exports changed; the vCenter is told before the call returns.

        If the vCenter cannot be reached, the change is pushed again after the next call.
        """
        self._fabric_dirty = True

    def save(self) -> None:
        """Persist the state to the lab directory (atomic replace)."""
        path = self.state_dir / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)

    # ---- machinery ---------------------------------------------------------------------------

    def _load(self) -> dict[str, Any] | None:
        path = self.state_dir / "state.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def operations(self) -> list[str]:
        """Return every operation key this emulator serves."""
        return sorted({e.operation for e in self._endpoints})

    def current_fabric(self) -> dict[str, Any]:
        """Return the fabric document with its generation number."""
        with self.lock:
            doc = self.fabric()
            doc.generation = self.state["_fabric_generation"]
            return doc.model_dump()

    def _push_fabric(self) -> None:
        with self._push_lock:
            with self.lock:
                if not self._fabric_dirty:
                    return
                self._fabric_dirty = False
                self.state["_fabric_generation"] += 1
                self.save()
            doc = self.current_fabric()
            for url in self.config.notify_urls:
                try:
                    r = self._push_session.post(
                        url, json=doc, verify=self.config.ca_bundle, timeout=30
                    )
                    r.raise_for_status()
                except requests.RequestException as exc:
                    print(f"lab: fabric push to {url} failed: {exc}", file=sys.stderr)
                    with self.lock:
                        self._fabric_dirty = True  # retried after the next call

    def _run(self, endpoint: _Endpoint, call: Call) -> Response:
        with self.lock:
            try:
                response = endpoint.handler(call)
            except HttpError as err:
                response = err.response
            if endpoint.method != "GET":
                self.save()
        self._push_fabric()
        return response

    def _wrap(self, endpoint: _Endpoint):
        async def handle(request: Request) -> Response:
            entry = self.call_log.begin(endpoint.operation, request.url.path)
            status = 500  # an exception escaping the handler is answered 500 by Starlette
            try:
                response = await self._serve(endpoint, request)
                status = response.status_code
                return response
            finally:
                self.call_log.end(entry, status)

        return handle

    async def _serve(self, endpoint: _Endpoint, request: Request) -> Response:
        with self._calls_lock:
            self.calls[endpoint.operation] += 1
        delay, error = self.rules.take(endpoint.operation)
        delay += self.latency.delay(endpoint.operation)  # both apply
        if delay:
            await asyncio.sleep(delay)
        if error is not None:
            return self.error_response(error, f"lab: injected failure ({error})")
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        call = Call(
            method=request.method,
            path=request.url.path,
            params=dict(request.path_params),
            query=request.query_params,
            headers=request.headers,
            body=body,
            raw_body=raw,
            client=request.client.host if request.client else "",
        )
        return await run_in_threadpool(self._run, endpoint, call)

    # ---- lab endpoints -----------------------------------------------------------------------

    async def _lab_fabric(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.current_fabric))

    async def _lab_state(self, request: Request) -> Response:
        def state() -> dict[str, Any]:
            with self.lock:
                return self.lab_state()

        return JSONResponse(await run_in_threadpool(state))

    async def _lab_calls(self, request: Request) -> Response:
        with self._calls_lock:
            if request.method == "DELETE":
                self.calls.clear()
                self.call_log.clear()
            return JSONResponse(dict(self.calls))

    async def _lab_call_log(self, request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0") or 0)
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, status_code=400)
        operation = request.query_params.get("operation") or None
        return JSONResponse(self.call_log.since(since, operation))

    def _unknown_operation(self, operation: str) -> Response | None:
        if operation in self.operations():
            return None
        return JSONResponse(
            {"error": f"unknown operation {operation!r}", "operations": self.operations()},
            status_code=400,
        )

    async def _lab_latency(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.latency.clear()
        elif request.method == "POST":
            try:
                req = LatencyRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            ops = [r.operation for r in req.rules]
            if len(set(ops)) != len(ops):
                return JSONResponse(
                    {"error": "each operation may appear once per request"}, status_code=400
                )
            for op in ops:  # refuse the whole request before applying any of it
                if (refused := self._unknown_operation(op)) is not None:
                    return refused
            self.latency.update(req.rules)
            return JSONResponse({"rules": self.latency.snapshot()}, status_code=201)
        return JSONResponse({"rules": self.latency.snapshot()})

    async def _lab_expire_sessions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)

        def run() -> Response:
            with self.lock:
                try:
                    done = self.expire_sessions(body)
                except ValueError as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
                self.save()
            return JSONResponse(done)

        return await run_in_threadpool(run)

    async def _lab_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.rules.clear()
            return JSONResponse({"faults": []})
        if request.method == "GET":
            return JSONResponse({"faults": self.rules.snapshot()})
        try:
            rule = FaultRule.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if (refused := self._unknown_operation(rule.operation)) is not None:
            return refused
        if rule.error is not None and not 400 <= rule.error <= 599:
            return JSONResponse({"error": "error must be an HTTP status 400-599"}, status_code=400)
        self.rules.add(rule)
        return JSONResponse({"faults": self.rules.snapshot()}, status_code=201)

    async def _lab_seed(self, request: Request) -> Response:
        try:
            spec = SeedSpec.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        def run() -> Response:
            with self.lock:
                if self.state.get("_seeded"):
                    return JSONResponse({"error": "array already seeded"}, status_code=409)
                try:
                    self.seed(spec)
                except ValueError as exc:  # a spec this vendor cannot hold (seed validates first)
                    return JSONResponse({"error": str(exc)}, status_code=400)
                self.state["_seeded"] = True
                self.mark_fabric_changed()
                self.save()
            self._push_fabric()
            return JSONResponse({"seeded": True}, status_code=201)

        return await run_in_threadpool(run)

    def push_on_start(self) -> None:
        """Push the fabric (as a new generation) to the vCenter, in the background.

        A restarted array is seen again by the hosts as soon as it is up. If the vCenter is
        not reachable (``lab up`` starts the arrays first), the push is retried after the
        next call; the vCenter fetches every fabric when it boots anyway.
        """
        with self.lock:
            self._fabric_dirty = True
        threading.Thread(target=self._push_fabric, name="fabric-push", daemon=True).start()

    def app(self) -> Starlette:
        """Return the ASGI application serving the vendor API and the lab endpoints.

        Its start-up pushes the fabric (see :meth:`push_on_start`).
        """
        routes = [
            Route("/lab/fabric", self._lab_fabric, methods=["GET"]),
            Route("/lab/state", self._lab_state, methods=["GET"]),
            Route("/lab/calls", self._lab_calls, methods=["GET", "DELETE"]),
            Route("/lab/calls/log", self._lab_call_log, methods=["GET"]),
            Route("/lab/faults", self._lab_faults, methods=["GET", "POST", "DELETE"]),
            Route("/lab/latency", self._lab_latency, methods=["GET", "POST", "DELETE"]),
            Route("/lab/sessions/expire", self._lab_expire_sessions, methods=["POST"]),
            Route("/lab/seed", self._lab_seed, methods=["POST"]),
        ]
        by_path: dict[str, list[_Endpoint]] = {}
        for e in self._endpoints:
            by_path.setdefault(e.path, []).append(e)
        for path, endpoints in by_path.items():
            for e in endpoints:
                routes.append(Route(path, self._wrap(e), methods=[e.method]))
        return Starlette(routes=routes, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.push_on_start()
        yield
