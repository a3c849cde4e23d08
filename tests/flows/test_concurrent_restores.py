"""Ten restores at once against one array and one host: the limits hold, nothing is left.

Each run restores one VM of ``ds-iscsi-02`` (ontap1, an igroup per host) to ``esx-02`` from
the same snapshot, so the ten runs make ten copies and contend for the same two limits
(``array-ontap1`` and ``esxi-esx-02``, set to 2 here). The steps that take a slot
(flows/slots.py) are slowed in the lab so that they overlap; the lab's call logs then show
how many of those operations were in progress at once on the array and on the host.
"""

from __future__ import annotations

import threading

from prefect.client.orchestration import get_client
from prefect.concurrency import services
from prefect.states import State

from flows.restore import restore_from_snapshot
from tests.support.concurrency import call_log, esx_host, last_seq, max_overlap, max_overlap_by

RUNS = 10
LIMIT = 2
ARRAY, HOST, DATASTORE = "ontap1", "esx-02", "ds-iscsi-02"
SLOW_S = 0.3

# what takes a slot of the array's limit: every change to the array
ARRAY_SLOWED = [
    "POST /api/storage/volumes",
    "POST /api/protocols/san/lun-maps",
    "DELETE /api/protocols/san/lun-maps/{}/{}",
    "DELETE /api/storage/volumes/{}",
]
# the vSphere methods of the steps that take a slot of the host's limit (flows/slots.py)
HOST_SLOTTED = {
    "AddInternetScsiStaticTargets",
    "RescanHba",
    "ResignatureUnresolvedVmfsVolume_Task",
    "PowerOnVM_Task",
    "UnmountVmfsVolume",
    "DetachScsiLun",
}
HOST_SLOWED = ["RescanHba", "ResignatureUnresolvedVmfsVolume_Task", "PowerOnVM_Task"]


def _set_limits(value: int | None, saved: dict[str, int | None]) -> None:
    """Set both tag limits to ``value`` (remembering what was there), or put back ``saved``."""
    with get_client(sync_client=True) as client:
        for tag in (f"array-{ARRAY}", f"esxi-{HOST}"):
            if value is not None:
                try:
                    saved[tag] = client.read_concurrency_limit_by_tag(tag).concurrency_limit
                except Exception:  # none yet
                    saved[tag] = None
                client.create_concurrency_limit(tag=tag, concurrency_limit=value)
            elif saved.get(tag) is None:
                client.delete_concurrency_limit_by_tag(tag)
            else:
                client.create_concurrency_limit(tag=tag, concurrency_limit=saved[tag])
    # a process that found no limit for a tag remembers that for 5 s (Prefect's task
    # engine); earlier tests ran steps with these tags, so without this the first steps
    # here could take no slot
    services._no_limits_cache.clear()


def _slots_in_use() -> dict[str, list]:
    with get_client(sync_client=True) as client:
        return {
            tag: client.read_concurrency_limit_by_tag(tag).active_slots
            for tag in (f"array-{ARRAY}", f"esxi-{HOST}")
        }


def _busiest(calls: list[dict]) -> list[tuple[str, str, float]]:
    """The calls in progress when the most were (for a failure's message)."""
    best: list[dict] = []
    for c in calls:
        now = [d for d in calls if d["start"] <= c["start"] < (d["end"] or float("inf"))]
        best = max(best, now, key=len)
    return [(d["operation"], d["path"], round(d["end"] - d["start"], 3)) for d in best]


def test_ten_restores_at_once_hold_the_array_and_host_limits(lab, lab_blocks, world):
    """Ten concurrent restores on one array and one host all succeed; no more than the
    limit of slot-taking operations ever runs at once on the array or on the host (and the
    limit is reached, so the check could fail); every copy, device, datastore and VM is gone
    afterwards and no slot is left taken."""
    ds = next(d for d in lab["datastores"] if d["name"] == DATASTORE)
    array = next(a for a in lab["arrays"] if a["name"] == ARRAY)
    http = world.http
    before = world.snapshot()
    marks = (last_seq(http, array["lab_url"]), last_seq(http, lab["vcenter"]["lab_url"]))
    saved: dict[str, int | None] = {}
    states: list[State | BaseException] = [None] * RUNS  # type: ignore[list-item]

    def one(i: int) -> None:
        try:
            states[i] = restore_from_snapshot(
                vms=ds["vms"][:1],
                snapshot=ds["snapshots"][-1],
                placement={"target_host": HOST},
                return_state=True,
            )
        except BaseException as exc:  # recorded: the test reports it below
            states[i] = exc

    _set_limits(LIMIT, saved)
    r = http.post(
        array["lab_url"] + "/latency",
        json={"rules": [{"operation": op, "delay_s": SLOW_S} for op in ARRAY_SLOWED]},
        timeout=30,
    )
    r.raise_for_status()
    world.vclab.post(
        "/latency", {"rules": [{"operation": m, "delay_s": SLOW_S} for m in HOST_SLOWED]}
    ).raise_for_status()
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(RUNS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        assert not [t for t in threads if t.is_alive()], "a restore did not finish"
    finally:
        http.delete(array["lab_url"] + "/latency", timeout=30).raise_for_status()
        world.vclab.delete("/latency")
        in_use = _slots_in_use()
        _set_limits(None, saved)

    failed = [s for s in states if not isinstance(s, State) or not s.is_completed()]
    assert failed == [], failed
    assert all([o["state"] for o in s.result()["vms"]] == ["verified"] for s in states)
    assert len({s.result()["restore_id"] for s in states}) == RUNS

    array_changes = [
        c
        for c in call_log(http, array["lab_url"], marks[0])
        if not c["operation"].startswith("GET ")
    ]
    # a separate copy for each separate restore operation
    assert len([c for c in array_changes if c["operation"] == "POST /api/storage/volumes"]) == RUNS
    spans = [(float(c["start"]), float(c["end"])) for c in array_changes]
    assert max_overlap(spans) == LIMIT, _busiest(array_changes)

    host_calls = [
        c
        for c in call_log(http, lab["vcenter"]["lab_url"], marks[1])
        if c["method"] in HOST_SLOTTED
    ]
    assert all(c["end"] is not None for c in host_calls), "a host operation is still running"
    assert max_overlap_by(host_calls, esx_host) == {HOST: LIMIT}

    assert in_use == {f"array-{ARRAY}": [], f"esxi-{HOST}": []}
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []
