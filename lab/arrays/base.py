"""What every array emulator shares: serving, counting, faults, persistence, fabric pushes.

A vendor emulator subclasses :class:`ArrayEmulator` and supplies its REST routes, its error
body, its seed logic and its fabric. The base class serves them over HTTPS and adds the
lab-only endpoints documented in ``lab/README.md``:

- ``GET /lab/fabric``  what hosts can see (lab.fabric.Fabric);
- ``GET /lab/state``   the array's objects as JSON;
- ``GET|DELETE /lab/calls``  counts of API operations served, keyed ``METHOD /path/{}``;
- ``GET|POST|DELETE /lab/faults``  injected failures and delays;
- ``POST /lab/seed``   create the production volumes of a fresh array (lab.fabric.SeedSpec).

When it starts, an emulator pushes its fabric to the vCenter (a restarted array's exports
come back on the hosts without waiting for a call or a rescan).

Vendor handlers run one at a time under the emulator's lock (a real array serialises a
session's requests too); injected delays are served outside the lock.
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
from collections import Counter
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
            with self._calls_lock:
                self.calls[endpoint.operation] += 1
            delay, error = self.rules.take(endpoint.operation)
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

        return handle

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
            return JSONResponse(dict(self.calls))

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
        if rule.operation not in self.operations():
            return JSONResponse(
                {"error": f"unknown operation {rule.operation!r}", "operations": self.operations()},
                status_code=400,
            )
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
            Route("/lab/faults", self._lab_faults, methods=["GET", "POST", "DELETE"]),
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
