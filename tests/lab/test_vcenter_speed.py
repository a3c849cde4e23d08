"""The vCenter's timed call log, latency rules and session expiry, over real SOAP (pyVmomi).

Spec items (lab/README.md): ``GET /lab/calls/log`` entries with ``start``/``end``
(``reply_end``, and ``task_end`` for a task that outlived its reply), ``POST|GET|DELETE
/lab/latency``, ``POST /lab/sessions/expire``. Session expiry runs in a lab of this module's
own: it would log out every other test's connection.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartStubAdapter, VimSessionOrientedStub
from pyVmomi import vim

from tests.support.concurrency import call_log, last_seq, max_overlap_by
from tests.support.labs import connect, connected, lab_http, private_lab
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import (
    datastore_file_url,
    read_datastore_file,
    session_cookie,
    wait,
)

RUNNING = vim.TaskInfo.State.running
SEARCH = "SearchDatastore_Task"
QUERY = "QueryUnresolvedVmfsVolumes"


@pytest.fixture(autouse=True)
def _no_latency_left(lab, http) -> Iterator[None]:
    """Latency rules are not consumed: each test removes its own."""
    yield
    http.delete(lab["vcenter"]["lab_url"] + "/latency", timeout=30).raise_for_status()


def vc_log(http, lab, since: int, **filters: str) -> list[dict[str, Any]]:
    """The vCenter call log after ``since``."""
    return call_log(http, lab["vcenter"]["lab_url"], since, **filters)


def vc_seq(http, lab) -> int:
    """The vCenter call log's latest sequence number."""
    return last_seq(http, lab["vcenter"]["lab_url"])


def search(ds: vim.Datastore, folder: str) -> vim.Task:
    """Start a search of ``[ds] folder`` (a read-only task)."""
    spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*"])
    return ds.browser.SearchDatastore_Task(f"[{ds.name}] {folder}", spec)


def files(result) -> list[str]:
    """The file names a datastore search found."""
    return sorted(f.path for f in result.file)


def duration(call: dict[str, Any]) -> float:
    """Seconds from a call's arrival to its end."""
    return call["end"] - call["start"]


def epoch(moment: datetime) -> float:
    """A vSphere dateTime as seconds since the epoch."""
    return moment.timestamp()


# ---- the call log ----------------------------------------------------------------------------


def test_each_call_has_its_start_and_end(si, lab, http) -> None:
    esx = host(si, "esx-02")
    since = vc_seq(http, lab)
    before = time.time()
    si.CurrentTime()
    esx.configManager.datastoreSystem.QueryUnresolvedVmfsVolumes()
    after = time.time()
    calls = [c for c in vc_log(http, lab, since) if c["method"] in ("CurrentTime", QUERY)]
    assert [c["method"] for c in calls] == ["CurrentTime", QUERY]
    first, second = calls
    assert second["host"] == "esx-02" and "host" not in first
    for c in calls:
        assert isinstance(c["start"], float) and isinstance(c["end"], float)
        assert before <= c["start"] <= c["end"] <= after
        assert c["reply_end"] == c["end"]  # not a task: it ends with its reply
        assert "task_end" not in c and "task" not in c
        stamped = datetime.fromisoformat(c["time"].replace("Z", "+00:00"))
        assert abs(epoch(stamped) - c["start"]) < 0.001  # `time` is the start, as RFC 3339
    assert first["end"] <= second["start"]
    assert second["seq"] > first["seq"] > since


def test_an_injected_delay_is_part_of_the_duration(si, lab, http, vclab) -> None:
    rule = {"operation": "CurrentTime", "delay_s": 0.5, "times": 1}
    assert vclab.post("/faults", rule).status_code == 200
    since = vc_seq(http, lab)
    si.CurrentTime()
    (call,) = vc_log(http, lab, since, method="CurrentTime")
    assert duration(call) >= 0.5


def test_a_task_call_ends_when_its_task_ends(si, lab, http, vclab) -> None:
    ds = find(si, vim.Datastore, "ds-iscsi-01")
    since = vc_seq(http, lab)
    quick = search(ds, "app-01")  # the simulator's tasks end before the reply
    assert "app-01.vmx" in files(wait(quick))
    (call,) = vc_log(http, lab, since, method=SEARCH)
    assert call["task"] == quick._moId
    assert call["end"] == call["reply_end"] and "task_end" not in call
    assert epoch(quick.info.completeTime) <= call["reply_end"] + 0.001

    rule = {"operation": SEARCH, "duration_s": 1.5, "times": 1}
    assert vclab.post("/faults", rule).status_code == 200
    since = vc_seq(http, lab)
    slow = search(ds, "app-02")
    (running,) = vc_log(http, lab, since, method=SEARCH)
    assert running["task"] == slow._moId
    assert running["end"] is None and running["reply_end"] is not None  # still running
    assert "app-02.vmx" in files(wait(slow))
    (done,) = vc_log(http, lab, since, method=SEARCH)
    assert done["task_end"] == done["end"]
    assert done["end"] - done["start"] >= 1.5
    assert done["reply_end"] < done["task_end"]
    assert abs(done["task_end"] - epoch(slow.info.completeTime)) < 0.01


# ---- latency rules -----------------------------------------------------------------------------


def test_latency_delays_every_call_of_its_methods(si, lab, http, vclab) -> None:
    esx = host(si, "esx-01")
    rules = [{"operation": "CurrentTime", "delay_s": 0.4}, {"operation": QUERY, "delay_s": 0.3}]
    r = vclab.post("/latency", {"rules": rules})
    assert r.status_code == 201, r.text
    assert r.json()["rules"] == rules
    since = vc_seq(http, lab)
    for _ in range(2):  # not consumed: every call waits
        si.CurrentTime()
        esx.configManager.datastoreSystem.QueryUnresolvedVmfsVolumes()
    calls = [c for c in vc_log(http, lab, since) if c["method"] in ("CurrentTime", QUERY)]
    assert [c["method"] for c in calls] == ["CurrentTime", QUERY] * 2
    for c in calls:
        assert duration(c) >= (0.4 if c["method"] == "CurrentTime" else 0.3)
    assert vclab.get("/latency")["rules"] == rules
    vclab.delete("/latency")
    assert vclab.get("/latency") == {"rules": []}


def test_a_task_method_with_latency_returns_a_running_task(si, lab, http, vclab) -> None:
    ds = find(si, vim.Datastore, "ds-fc-01")
    assert vclab.post("/latency", {"rules": [{"operation": SEARCH, "delay_s": 3}]}).ok
    since = vc_seq(http, lab)
    task = search(ds, "web-01")
    info = task.info
    assert info.state == RUNNING and info.result is None  # returned at once, work to come
    assert info.descriptionId == "HostDatastoreBrowser.search"
    assert task in si.content.taskManager.recentTask
    assert "web-01.vmx" in files(wait(task, timeout=60))
    second = search(ds, "web-02")  # the rule is still there
    assert second.info.state == RUNNING
    assert "web-02.vmx" in files(wait(second, timeout=60))
    calls = vc_log(http, lab, since, method=SEARCH)
    assert [c["task"] for c in calls] == [task._moId, second._moId]
    for c in calls:
        assert c["end"] - c["start"] >= 3
        assert c["task_end"] == c["end"] and c["reply_end"] < c["task_end"]


def test_latency_and_fault_rules_both_apply(si, lab, http, vclab) -> None:
    ds = find(si, vim.Datastore, "ds-fc-01")
    assert vclab.post("/latency", {"rules": [{"operation": SEARCH, "delay_s": 1}]}).ok
    fault = {"operation": SEARCH, "error": "FileNotFound", "times": 1}
    assert vclab.post("/faults", fault).status_code == 200
    since = vc_seq(http, lab)
    failing = search(ds, "web-03")
    assert failing.info.state == RUNNING  # the fault comes when the latency is over
    with pytest.raises(vim.fault.FileNotFound):
        wait(failing)
    working = search(ds, "web-03")
    assert "web-03.vmx" in files(wait(working))
    calls = vc_log(http, lab, since, method=SEARCH)
    assert [c.get("fault") for c in calls] == ["FileNotFound", None]
    assert all(c["end"] - c["start"] >= 1 for c in calls)
    assert vclab.get("/faults")["faults"] == []
    assert vclab.get("/latency")["rules"] == [{"operation": SEARCH, "delay_s": 1}]


def test_latency_rules_are_validated_as_a_whole(vclab) -> None:
    good = {"operation": "RescanHba", "delay_s": 0.2}
    refused = [
        {"rules": [good, {"operation": "NoSuchMethod", "delay_s": 1}]},
        {"rules": [good, {"operation": "HostDnsConfig", "delay_s": 1}]},  # a data type
        {"rules": [good, good]},
        {"rules": [{"operation": "RescanHba", "delay_s": -1}]},
        {"rules": [{"operation": "RescanHba"}]},
        {"operation": "RescanHba", "delay_s": 1},
    ]
    for body in refused:
        assert vclab.post("/latency", body).status_code == 400, body
    assert vclab.get("/latency") == {"rules": []}
    assert vclab.post("/latency", {"rules": [good]}).json()["rules"] == [good]
    again = {"operation": "RescanHba", "delay_s": 0.5}
    assert vclab.post("/latency", {"rules": [again]}).json()["rules"] == [again]
    off = {"operation": "RescanHba", "delay_s": 0}
    assert vclab.post("/latency", {"rules": [off]}).json()["rules"] == []


def test_overlapping_calls_per_host_show_in_the_log(lab, http, vclab) -> None:
    """Delayed calls on one host overlap; the log's intervals count them per host."""
    assert vclab.post("/latency", {"rules": [{"operation": QUERY, "delay_s": 1.0}]}).ok
    sis = [connect(lab) for _ in range(3)]
    try:
        systems = [host(s, "esx-03").configManager.datastoreSystem for s in sis]
        barrier = threading.Barrier(len(systems))
        errors: list[BaseException] = []

        def query(dss) -> None:
            try:
                barrier.wait(timeout=30)
                dss.QueryUnresolvedVmfsVolumes()
            except BaseException as exc:  # reported below
                errors.append(exc)

        since = vc_seq(http, lab)
        threads = [threading.Thread(target=query, args=(d,)) for d in systems]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        together = vc_log(http, lab, since, method=QUERY)
        assert len(together) == 3
        assert max_overlap_by(together)["esx-03"] >= 2
        since = vc_seq(http, lab)
        for d in systems:  # one after the other
            d.QueryUnresolvedVmfsVolumes()
        assert max_overlap_by(vc_log(http, lab, since, method=QUERY)) == {"esx-03": 1}
    finally:
        for s in sis:
            Disconnect(s)


# ---- session expiry (a lab of this module's own) ------------------------------------------------


@pytest.fixture(scope="module")
def own_lab(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A lab no other test uses: expiring its sessions logs nobody else out."""
    with private_lab(tmp_path_factory.mktemp("expiry-lab"), tools_delay_s=0.2) as info:
        yield info


def _session_si(info: dict[str, Any]):
    """A ServiceInstance over pyVmomi's session-oriented stub, which logs in again when a
    call is answered NotAuthenticated."""
    vc = info["vcenter"]
    stub = SmartStubAdapter(
        host=vc["host"],
        port=vc["port"],
        sslContext=ssl.create_default_context(cafile=info["ca_bundle"]),
    )
    login = VimSessionOrientedStub.makeUserLoginMethod(vc["user"], vc["password"])
    return vim.ServiceInstance("ServiceInstance", VimSessionOrientedStub(stub, login))


def test_expiry_ends_every_soap_session(own_lab) -> None:
    http = lab_http(own_lab)
    lab_url = own_lab["vcenter"]["lab_url"]
    first, second = connect(own_lab), connect(own_lab)
    first_key = first.content.sessionManager.currentSession.key
    r = http.post(lab_url + "/sessions/expire", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["expired"] >= 2
    since = last_seq(http, lab_url)
    for si in (first, second):
        with pytest.raises(vim.fault.NotAuthenticated):
            si.CurrentTime()
        with pytest.raises(vim.fault.NotAuthenticated):
            si.content.rootFolder.childEntity  # noqa: B018 - a property read, refused too
        assert si.content.sessionManager.currentSession is None  # "am I logged in?" works
    refused = [c for c in call_log(http, lab_url, since) if c.get("fault") == "NotAuthenticated"]
    assert len(refused) == 4
    url = datastore_file_url(own_lab, "ds-iscsi-01", "app-01/app-01.vmx")
    r = http.get(url, headers={"Cookie": session_cookie(first)}, timeout=30)
    assert r.status_code == 401  # the file service wants a live session too

    vc = own_lab["vcenter"]
    first.content.sessionManager.Login(vc["user"], vc["password"])  # log in again
    assert first.content.sessionManager.currentSession.key != first_key
    assert first.content.rootFolder.childEntity[0].name == "lab-dc"
    with pytest.raises(vim.fault.NotAuthenticated):
        second.CurrentTime()  # each client must log in again
    assert (
        http.post(lab_url + "/sessions/expire", json={"all": True}, timeout=30).status_code == 400
    )
    for si in (first, second):
        Disconnect(si)


def test_the_session_stub_logs_in_again_after_expiry(own_lab) -> None:
    http = lab_http(own_lab)
    lab_url = own_lab["vcenter"]["lab_url"]
    si = _session_si(own_lab)
    assert si.content.rootFolder.childEntity[0].name == "lab-dc"
    key = si.content.sessionManager.currentSession.key
    assert http.post(lab_url + "/sessions/expire", timeout=30).json()["expired"] >= 1
    since = last_seq(http, lab_url)
    assert isinstance(si.CurrentTime(), datetime)  # NotAuthenticated → Login → again
    assert si.content.sessionManager.currentSession.key != key
    calls = [c for c in call_log(http, lab_url, since) if c["method"] in ("CurrentTime", "Login")]
    assert [(c["method"], c.get("fault")) for c in calls] == [
        ("CurrentTime", "NotAuthenticated"),
        ("Login", None),
        ("CurrentTime", None),
    ]
    with connected(own_lab) as other:  # new logins are not affected
        assert other.content.rootFolder.childEntity[0].name == "lab-dc"
        text = read_datastore_file(own_lab, http, "ds-iscsi-01", "app-01/app-01-flat.vmdk", other)
        assert "generation: 3" in text
