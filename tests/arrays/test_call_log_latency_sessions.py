"""Every emulator's call log (with durations), latency rules and session expiry, over HTTPS.

Spec items: the arrays' ``GET /lab/calls/log``, ``POST|GET|DELETE /lab/latency`` and
``POST /lab/sessions/expire`` (lab/README.md), checked with requests and the vendors'
own clients (python-3parclient, netapp_ontap).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from netapp_ontap import HostConnection
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import Cluster

from lab.arrays.base import MAX_CALL_LOG, CallLog
from tests.arrays.conftest import RunningArray, seed_spec
from tests.arrays.test_hpe_api import Wsapi, wsapi_error
from tests.arrays.test_ontap_api import Ontap, ontap_error
from tests.support.concurrency import max_overlap, max_overlap_per_array

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet (imported by the client) warns it is deprecated
    from hpe3parclient.client import HPE3ParClient

SYSTEM = "GET /api/v1/system"
VOLUMES = "GET /api/v1/volumes"
CLUSTER = "GET /api/cluster"


@pytest.fixture(scope="module")
def primera(start_array_module, tmp_path_factory) -> RunningArray:
    """A seeded Primera of its own (its sessions are expired by these tests)."""
    arr = start_array_module("hpe_primera", name="primera-speed")
    spec = seed_spec(tmp_path_factory.mktemp("seed"), "iscsi", "ds_iscsi", vmfs=True)
    assert arr.lab("POST", "/lab/seed", json=spec).status_code == 201
    return arr


@pytest.fixture(scope="module")
def ontap(start_array_module, tmp_path_factory) -> RunningArray:
    """A seeded ONTAP of its own."""
    arr = start_array_module("netapp_ontap", name="ontap_speed")
    spec = seed_spec(tmp_path_factory.mktemp("seed"), "nfs", "ds_nfs_01", vmfs=False)
    assert arr.lab("POST", "/lab/seed", json=spec).status_code == 201
    return arr


@pytest.fixture(autouse=True)
def _clean_rules(request) -> Iterator[None]:
    """No fault, latency or pending expiry leaks from one test into the next."""
    yield
    for name in ("primera", "ontap"):
        if name in request.fixturenames:
            arr: RunningArray = request.getfixturevalue(name)
            arr.lab("DELETE", "/lab/faults")
            arr.lab("DELETE", "/lab/latency")


@pytest.fixture
def wsapi(primera: RunningArray) -> Wsapi:
    """A logged-in WSAPI session."""
    w = Wsapi(primera)
    assert w.login().status_code == 201
    return w


def log_after(arr: RunningArray, since: int, **params: str) -> dict[str, Any]:
    """Return ``GET /lab/calls/log?since=...`` of ``arr``."""
    r = arr.lab("GET", "/lab/calls/log", params={"since": since, **params})
    assert r.status_code == 200, r.text
    return r.json()


def last_seq(arr: RunningArray) -> int:
    """Return the call log's latest sequence number."""
    return log_after(arr, 2**62)["last_seq"]


def duration(call: dict[str, Any]) -> float:
    """Seconds from a call's arrival to its answer."""
    return call["end"] - call["start"]


# ---- the call log -------------------------------------------------------------------------


def test_primera_call_log_times_every_call_and_its_status(
    primera: RunningArray, wsapi: Wsapi
) -> None:
    since = last_seq(primera)
    before = time.time()
    wsapi.ok("GET", "/system")
    assert wsapi.call("GET", "/volumes/NO_SUCH_VV").status_code == 404
    assert wsapi.call("GET", "/system", key="0-not-a-key").status_code == 403
    after = time.time()
    doc = log_after(primera, since)
    calls = doc["calls"]
    assert [(c["operation"], c["path"], c["status"]) for c in calls] == [
        (SYSTEM, "/api/v1/system", 200),
        ("GET /api/v1/volumes/{}", "/api/v1/volumes/NO_SUCH_VV", 404),
        (SYSTEM, "/api/v1/system", 403),
    ]
    assert [c["seq"] for c in calls] == list(range(since + 1, since + 4))
    assert doc["last_seq"] == since + 3
    for c in calls:
        assert isinstance(c["start"], float) and isinstance(c["end"], float)
        assert before <= c["start"] <= c["end"] <= after
    assert calls[0]["end"] <= calls[1]["start"]  # one after the other
    only = log_after(primera, since, operation=SYSTEM)["calls"]
    assert [c["seq"] for c in only] == [calls[0]["seq"], calls[2]["seq"]]
    assert log_after(primera, since + 2)["calls"] == [calls[2]]


def test_deleting_the_calls_clears_the_log_but_not_the_numbering(
    ontap: RunningArray,
) -> None:
    api = Ontap(ontap)
    api.ok("GET", "/api/cluster")
    seq = last_seq(ontap)
    assert seq > 0
    assert ontap.lab("DELETE", "/lab/calls").json() == {}
    assert log_after(ontap, 0) == {"last_seq": seq, "calls": []}
    api.ok("GET", "/api/cluster")
    calls = log_after(ontap, 0)["calls"]
    assert [(c["seq"], c["operation"], c["status"]) for c in calls] == [(seq + 1, CLUSTER, 200)]
    assert ontap.lab("GET", "/lab/calls").json() == {CLUSTER: 1}
    assert ontap.lab("GET", "/lab/calls/log", params={"since": "x"}).status_code == 400


def test_injected_fault_delays_count_in_the_duration(primera: RunningArray, wsapi: Wsapi) -> None:
    rule = {"operation": SYSTEM, "error": 503, "times": 1, "delay_s": 0.5}
    assert primera.lab("POST", "/lab/faults", json=rule).status_code == 201
    since = last_seq(primera)
    assert wsapi.call("GET", "/system").status_code == 503
    (call,) = log_after(primera, since)["calls"]
    assert call["status"] == 503
    assert duration(call) >= 0.5


# ---- latency rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["primera", "ontap"])
def test_latency_delays_every_call_until_deleted(which: str, request) -> None:
    arr: RunningArray = request.getfixturevalue(which)
    if which == "primera":
        w = Wsapi(arr)
        assert w.login().status_code == 201
        ops = [SYSTEM, VOLUMES]

        def call(op: str) -> int:
            return w.call("GET", "/system" if op == SYSTEM else "/volumes").status_code
    else:
        api = Ontap(arr)
        ops = [CLUSTER, "GET /api/storage/volumes"]

        def call(op: str) -> int:
            return api.call("GET", op.split(" ", 1)[1]).status_code

    rules = [{"operation": ops[0], "delay_s": 0.4}, {"operation": ops[1], "delay_s": 0.3}]
    r = arr.lab("POST", "/lab/latency", json={"rules": rules})
    assert r.status_code == 201, r.text
    assert r.json()["rules"] == sorted(rules, key=lambda x: x["operation"])
    since = last_seq(arr)
    for op in ops + ops:  # not consumed: the second round is delayed too
        start = time.monotonic()
        assert call(op) == 200
        wanted = 0.4 if op == ops[0] else 0.3
        assert time.monotonic() - start >= wanted
    calls = log_after(arr, since)["calls"]
    assert [c["operation"] for c in calls] == ops + ops
    for c in calls:
        assert duration(c) >= (0.4 if c["operation"] == ops[0] else 0.3)
    assert len(arr.lab("GET", "/lab/latency").json()["rules"]) == 2
    assert arr.lab("DELETE", "/lab/latency").json() == {"rules": []}
    assert arr.lab("GET", "/lab/latency").json() == {"rules": []}


def test_latency_and_fault_rules_both_apply(primera: RunningArray, wsapi: Wsapi) -> None:
    latency = {"rules": [{"operation": SYSTEM, "delay_s": 0.3}]}
    assert primera.lab("POST", "/lab/latency", json=latency).status_code == 201
    fault = {"operation": SYSTEM, "error": 503, "times": 1}
    assert primera.lab("POST", "/lab/faults", json=fault).status_code == 201
    since = last_seq(primera)
    failed = wsapi.call("GET", "/system")
    wsapi_error(failed, 503, 1)  # the vendor's error body for an injected 5xx
    wsapi.ok("GET", "/system")
    calls = log_after(primera, since)["calls"]
    assert [c["status"] for c in calls] == [503, 200]
    assert all(duration(c) >= 0.3 for c in calls)
    assert primera.lab("GET", "/lab/faults").json() == {"faults": []}  # the fault was used
    assert primera.lab("GET", "/lab/latency").json()["rules"] == latency["rules"]  # kept


def test_latency_rules_are_validated_as_a_whole(ontap: RunningArray) -> None:
    good = {"operation": CLUSTER, "delay_s": 0.2}
    r = ontap.lab(
        "POST", "/lab/latency", json={"rules": [good, {"operation": "GET /api/nope", "delay_s": 1}]}
    )
    assert r.status_code == 400
    assert CLUSTER in r.json()["operations"]
    assert ontap.lab("GET", "/lab/latency").json() == {"rules": []}  # nothing applied
    assert ontap.lab("POST", "/lab/latency", json={"rules": [good, good]}).status_code == 400
    bad = {"rules": [{"operation": CLUSTER, "delay_s": -1}]}
    assert ontap.lab("POST", "/lab/latency", json=bad).status_code == 400
    assert ontap.lab("POST", "/lab/latency", json={"operation": CLUSTER}).status_code == 400
    assert ontap.lab("POST", "/lab/latency", json={"rules": [good]}).status_code == 201
    again = {"rules": [{"operation": CLUSTER, "delay_s": 0.5}]}  # replaces the delay
    assert ontap.lab("POST", "/lab/latency", json=again).json()["rules"] == again["rules"]
    off = {"rules": [{"operation": CLUSTER, "delay_s": 0}]}  # 0 removes it
    assert ontap.lab("POST", "/lab/latency", json=off).json() == {"rules": []}


def test_delayed_calls_overlap_and_the_log_shows_it(
    primera: RunningArray, ontap: RunningArray
) -> None:
    """Latency is served outside the emulator's lock: concurrent calls are in progress
    together, and the call log's intervals say how many."""
    for arr, op in ((primera, "GET /api"), (ontap, CLUSTER)):
        rules = {"rules": [{"operation": op, "delay_s": 1.0}]}
        assert arr.lab("POST", "/lab/latency", json=rules).status_code == 201
    since = {"primera": last_seq(primera), "ontap": last_seq(ontap)}
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def hit(arr: RunningArray, path: str, auth: tuple[str, str] | None) -> None:
        barrier.wait(timeout=30)
        r = requests.get(arr.url + path, auth=auth, verify=arr.ca_bundle, timeout=60)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=hit, args=(primera, "/api", None)) for _ in range(3)] + [
        threading.Thread(target=hit, args=(ontap, "/api/cluster", ("admin", "lab-secret")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert statuses == [200] * 6
    logs = {
        "primera": log_after(primera, since["primera"])["calls"],
        "ontap": log_after(ontap, since["ontap"])["calls"],
    }
    assert [len(c) for c in logs.values()] == [3, 3]
    overlap = max_overlap_per_array(logs)
    assert overlap["primera"] >= 2 and overlap["ontap"] >= 2
    # the same calls one at a time never overlap
    for arr, path, auth, name in (
        (primera, "/api", None, "primera"),
        (ontap, "/api/cluster", ("admin", "lab-secret"), "ontap"),
    ):
        arr.lab("DELETE", "/lab/latency")
        seq = last_seq(arr)
        for _ in range(3):
            requests.get(arr.url + path, auth=auth, verify=arr.ca_bundle, timeout=30)
        serial = log_after(arr, seq)["calls"]
        assert len(serial) == 3
        assert max_overlap([(c["start"], c["end"]) for c in serial]) == 1, name


# ---- session expiry ---------------------------------------------------------------------------


def test_primera_expiry_drops_every_session_key(primera: RunningArray) -> None:
    first, second = Wsapi(primera), Wsapi(primera)
    assert first.login().status_code == 201 and second.login().status_code == 201
    first.ok("GET", "/system")
    r = primera.lab("POST", "/lab/sessions/expire")
    assert r.status_code == 200, r.text
    assert r.json()["expired"] >= 2
    assert primera.lab("GET", "/lab/state").json()["raw"]["sessions"] == 0
    for w in (first, second):
        wsapi_error(w.call("GET", "/system"), 403, 6)  # INV_SESS_KEY
    assert first.login().status_code == 201  # a new login works at once
    config = first.ok("GET", "/wsapiconfiguration").json()
    assert config["sessionsInUse"] == 1
    wsapi_error(second.call("GET", "/volumes"), 403, 6)  # the old key stays dead
    assert primera.lab("POST", "/lab/sessions/expire", json={"times": 2}).status_code == 400


def test_hpe_client_logs_in_again_after_expiry(primera: RunningArray) -> None:
    client = HPE3ParClient(primera.url + "/api/v1", secure=primera.ca_bundle)
    client.getWsApiVersion()
    client.login("3paradm", "lab-secret")
    old_key = client.get_session_key()
    assert primera.lab("POST", "/lab/sessions/expire").json()["expired"] >= 1
    since = last_seq(primera)
    assert client.getVolume("ds_iscsi")["name"] == "ds_iscsi"  # 403 → login → replay
    assert client.get_session_key() not in (None, old_key)
    calls = log_after(primera, since)["calls"]
    assert [(c["operation"], c["status"]) for c in calls] == [
        ("GET /api/v1/volumes/{}", 403),
        ("POST /api/v1/credentials", 201),
        ("GET /api/v1/volumes/{}", 200),
    ]
    client.logout()


def test_ontap_expiry_answers_the_next_calls_401(ontap: RunningArray) -> None:
    api = Ontap(ontap)
    api.ok("GET", "/api/cluster")
    r = ontap.lab("POST", "/lab/sessions/expire")
    assert r.status_code == 200 and r.json() == {"unauthorized_calls": 1}
    ontap_error(api.call("GET", "/api/cluster"), 401, "6")  # valid credentials, refused once
    api.ok("GET", "/api/cluster")
    assert ontap.lab("POST", "/lab/sessions/expire", json={"times": 3}).status_code == 200
    since = last_seq(ontap)
    assert ontap.lab("GET", "/lab/fabric").status_code == 200  # lab endpoints are not refused
    for _ in range(3):
        ontap_error(api.call("GET", "/api/svm/svms"), 401, "6")
    api.ok("GET", "/api/svm/svms")
    statuses = [c["status"] for c in log_after(ontap, since)["calls"]]
    assert statuses == [401, 401, 401, 200]
    for body in ({"times": 0}, {"times": "2"}, {"calls": 1}):
        assert ontap.lab("POST", "/lab/sessions/expire", json=body).status_code == 400
    api.ok("GET", "/api/cluster")  # a refused request left nothing pending


def test_ontap_client_sees_the_401_then_works_again(
    ontap: RunningArray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    conn = HostConnection(
        "127.0.0.1",
        port=ontap.config.port,
        username="admin",
        password="lab-secret",
        verify=ontap.ca_bundle,
    )
    with conn:
        cluster = Cluster()
        cluster.get()
        assert ontap.lab("POST", "/lab/sessions/expire").status_code == 200
        with pytest.raises(NetAppRestError) as err:
            Cluster().get()
        assert err.value.status_code == 401
        again = Cluster()
        again.get()
        assert again.name == cluster.name


def test_the_call_log_keeps_the_latest_calls_only() -> None:
    """The emulators keep the latest MAX_CALL_LOG (20000) calls; the same class, smaller."""
    assert MAX_CALL_LOG == 20000
    log = CallLog(keep=3)
    entries = [log.begin("GET /api", "/api") for _ in range(5)]
    for e in entries[:4]:
        log.end(e, 200)
    doc = log.since(0)
    assert doc["last_seq"] == 5
    assert [c["seq"] for c in doc["calls"]] == [3, 4, 5]
    assert [c["status"] for c in doc["calls"]] == [200, 200, None]  # the last is running
    assert doc["calls"][2]["end"] is None
