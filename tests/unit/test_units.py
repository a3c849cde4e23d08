"""Fast checks of pure logic: snapshot selection, tags, retry rules, the UI form."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest
from prefect.utilities.callables import parameter_schema
from pyVmomi import vim, vmodl

from blocks.errors import ArrayConflict, ArrayError, ArrayNotFound, ArrayTransientError
from blocks.models import ArraySnapshot, CopyTag
from flows.plan import PlanError, select_snapshot
from flows.restore import restore_from_snapshot
from tasks.retry import is_transient

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _snaps() -> list[ArraySnapshot]:
    return [
        ArraySnapshot(array="a", id=str(i), name=n, volume="V", created=NOW - timedelta(hours=h))
        for i, (n, h) in enumerate([("V.daily-1", 48), ("V.daily-2", 24), ("V.hourly", 1)])
    ]


@pytest.mark.parametrize(
    ("selector", "name"),
    [
        ("latest", "V.hourly"),
        ("V.daily-1", "V.daily-1"),
        ("daily-2", "V.daily-2"),  # the part after the vendor's volume prefix
        ("latest-before:2026-11-24T13:00:00Z", "V.daily-2"),
        ("latest-before:2026-11-24T11:00:00", "V.daily-1"),  # naive times are UTC
    ],
)
def test_snapshot_selectors(selector, name):
    assert select_snapshot(_snaps(), selector).name == name


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("nope", "no snapshot named 'nope'; snapshots: V.daily-1, V.daily-2, V.hourly"),
        ("latest-before:2020-01-01T00:00:00Z", "no snapshot was taken before 2020-01-01"),
        ("latest-before:yesterday", "'yesterday' is not an ISO 8601 time"),
    ],
)
def test_snapshot_selector_errors_say_what_there_is(selector, message):
    result = select_snapshot(_snaps(), selector)
    assert isinstance(result, str) and message in result
    assert select_snapshot([], "latest") == "the volume has no snapshots"


def test_copy_tag_round_trip_and_foreign_comments():
    tag = CopyTag(run="b29bef3a-2fac", source="DS01@daily")
    back = CopyTag.decode(tag.encode())
    assert back == tag
    for foreign in (None, "", "a volume comment", '{"by":"someone-else","run":"x"}', "[1,2]"):
        assert CopyTag.decode(foreign) is None


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ArrayTransientError("busy"), True),
        (ArrayNotFound("gone"), False),
        (ArrayConflict("exists"), False),
        (ArrayError("500"), False),
        (vmodl.fault.HostCommunication(), True),
        (vmodl.fault.HostNotReachable(), True),
        (vim.fault.TaskInProgress(), True),
        (vim.fault.HostConfigFault(), False),
        (vim.fault.NotFound(), False),
        (vim.fault.InvalidLogin(), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (ssl.SSLCertVerificationError(), False),
        (ValueError(), False),
    ],
)
def test_only_transient_failures_are_retried(exc, transient):
    assert is_transient(exc) is transient


def test_plan_error_lists_every_problem_on_one_line():
    err = PlanError(["VM 'x' is not in the inventory", "no snapshot named 'y'"])
    assert str(err) == (
        "the restore was not started; fix the request: (1) VM 'x' is not in the inventory; "
        "(2) no snapshot named 'y'"
    )
    assert str(PlanError(["one"])) == "the restore was not started; fix the request: one"


def test_the_ui_form_groups_the_parameters_in_titled_sections_with_defaults():
    schema = parameter_schema(restore_from_snapshot.fn).model_dump()
    props, defs = schema["properties"], schema["definitions"]
    assert schema["required"] == ["vms"]
    assert list(props) == [
        "vms", "snapshot", "operation", "source", "placement", "network", "finish", "files",
        "vcenter", "arrays",
    ]  # fmt: skip
    assert defs["Operation"]["enum"] == ["instant_recovery", "full_restore", "vm_files"]
    assert defs["ProtocolChoice"]["enum"] == ["auto", "iscsi", "fc", "nfs"]
    assert defs["Finish"]["enum"] == ["wait_for_user", "migrate", "stop"]
    assert defs["NetworkMode"]["enum"] == ["auto", "keep", "disconnected", "map"]
    assert defs["OtherDisks"]["enum"] == ["refuse", "detach", "from_snapshots"]
    titles = {
        "source": "What to restore",
        "placement": "Where",
        "network": "Network and verification",
        "finish": "How to finish",
        "files": "VM files",
    }
    for name, title in titles.items():
        section = defs[props[name]["$ref"].rsplit("/", 1)[-1]]
        assert section["title"] == title
        assert props[name]["description"]  # the flow's docstring, per section
        for field, spec in section["properties"].items():
            assert spec.get("description"), (name, field)
    assert props["network"]["default"]["mode"] == "auto"
    assert props["source"]["default"]["other_disks"] == "refuse"
    assert props["finish"]["default"]["action"] == "stop"
    for name in ("vms", "snapshot", "operation", "vcenter"):
        assert props[name].get("description"), name
    assert props["snapshot"]["default"] == "latest"
    assert props["vcenter"]["default"] == "default"
    # at most a handful of fields in the form's first level
    assert len(props) <= 10


def test_a_datastore_on_any_lun_of_a_copy_belongs_to_it():
    """An ONTAP FlexClone may hold several LUNs: a datastore on any of them is the copy's."""
    from blocks.models import SnapshotCopy
    from tasks.sweep import SeenDatastore, backs

    copy = SnapshotCopy(
        array="ontap1",
        id="u",
        name="sr_x",
        naa="naa.600a0980aa",
        naas=["naa.600A0980AA", "naa.600a0980bb"],
    )
    on_second = SeenDatastore(name="sr-x", moref="ds-1", kind="vmfs", naa="naa.600a0980bb")
    elsewhere = SeenDatastore(name="prod", moref="ds-2", kind="vmfs", naa="naa.600a0980cc")
    assert backs(on_second, copy, []) and not backs(elsewhere, copy, [])
    assert copy.devices() == {"naa.600a0980aa", "naa.600a0980bb"}
