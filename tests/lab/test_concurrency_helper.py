"""The pure overlap counting of tests/support/concurrency.py (the load test relies on it)."""

from __future__ import annotations

import math

import pytest

from tests.support.concurrency import (
    esx_host,
    interval,
    max_overlap,
    max_overlap_by,
    max_overlap_per_array,
)


def test_max_overlap_counts_calls_in_progress_together() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0.0, 1.0)]) == 1
    assert max_overlap([(0.0, 1.0), (2.0, 3.0)]) == 1
    assert max_overlap([(0.0, 2.0), (1.0, 3.0)]) == 2
    assert max_overlap([(0.0, 10.0), (1.0, 2.0), (1.5, 3.0), (2.5, 4.0)]) == 3
    assert max_overlap([(0.0, 5.0), (1.0, 2.0), (3.0, 4.0)]) == 2


def test_touching_empty_and_open_intervals() -> None:
    assert max_overlap([(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]) == 1  # half-open: no overlap
    assert max_overlap([(1.0, 1.0), (1.0, 1.0), (0.0, 2.0)]) == 1  # empty ones never count
    assert max_overlap([(0.0, math.inf), (5.0, 6.0), (100.0, 101.0)]) == 2
    with pytest.raises(ValueError):
        max_overlap([(2.0, 1.0)])


def test_grouping_a_vcenter_log_by_host() -> None:
    log = [
        {"seq": 1, "method": "RescanHba", "host": "esx-01", "start": 0.0, "end": 2.0},
        {"seq": 2, "method": "RescanHba", "host": "esx-01", "start": 1.0, "end": 3.0},
        {"seq": 3, "method": "RescanHba", "host": "esx-02", "start": 1.0, "end": 3.0},
        {"seq": 4, "method": "PowerOnVM_Task", "host": "esx-02", "start": 4.0, "end": None},
        {"seq": 5, "method": "RetrievePropertiesEx", "start": 0.0, "end": 9.0},
        {"seq": 6, "method": "CurrentTime", "host": "", "start": 0.0, "end": 9.0},
    ]
    assert interval(log[3]) == (4.0, math.inf)
    assert max_overlap_by(log) == {"esx-01": 2, "esx-02": 1}
    log.append(
        {"seq": 7, "method": "PowerOnVM_Task", "vm_host": "esx-01", "start": 1.5, "end": 1.8}
    )
    assert max_overlap_by(log) == {"esx-01": 2, "esx-02": 1}  # `host` only
    assert max_overlap_by(log, key=esx_host) == {"esx-01": 3, "esx-02": 1}
    by_method = max_overlap_by(log, key=lambda c: c["method"])
    assert by_method == {
        "CurrentTime": 1,
        "PowerOnVM_Task": 1,  # (4, inf) and (1.5, 1.8) do not meet
        "RescanHba": 3,
        "RetrievePropertiesEx": 1,
    }


def test_per_array_overlap() -> None:
    logs = {
        "primera1": [{"start": 0.0, "end": 1.0}, {"start": 0.5, "end": 1.5}],
        "ontap1": [{"start": 0.0, "end": 1.0}, {"start": 1.0, "end": 1.5}],
        "idle": [],
    }
    assert max_overlap_per_array(logs) == {"primera1": 2, "ontap1": 1, "idle": 0}
