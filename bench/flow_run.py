"""One restore in a process of its own: ``python -m bench.flow_run FLOW PARAMS_JSON``.

The benchmark runs every measured flow this way, so the flow's peak memory is the
process's own, and prints one JSON line: the final state, the flow's result, its run id.
FLOW is ``restore`` (restore_from_snapshot), ``janitor``, ``catalog``, or ``tasks``: a flow
of ``n`` trivial tasks one after the other (with ``tag``, each takes a slot of its limit),
which measures what Prefect itself costs per task run.
"""

from __future__ import annotations

import json
import sys
import time


def trivial_tasks(n: int, tag: str | None = None, **_: object) -> object:
    """Run ``n`` tasks that do nothing, one after the other; return the seconds they took."""
    from prefect import flow, task

    @task(tags=[tag] if tag else [])
    def nothing(i: int) -> int:
        return i

    @flow(name="bench-trivial-tasks")
    def tasks_flow() -> dict[str, float]:
        start = time.monotonic()
        for i in range(n):
            nothing(i)
        return {"seconds": time.monotonic() - start}

    return tasks_flow(return_state=True)


def main() -> None:
    """Run the flow named on the command line with the JSON parameters; print the outcome."""
    kind, params = sys.argv[1], json.loads(sys.argv[2])
    if kind == "restore":
        from flows.restore import restore_from_snapshot as flow
    elif kind == "janitor":
        from flows.janitor import janitor as flow
    elif kind == "catalog":
        from flows.catalog import snapshot_catalog as flow
    elif kind == "tasks":
        flow = trivial_tasks
    else:
        raise SystemExit(f"unknown flow {kind!r}: restore, janitor, catalog or tasks")
    start = time.time()
    state = flow(**params) if kind == "tasks" else flow(**params, return_state=True)
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # a failed run's result is its exception
        result = {"error": str(exc)}
    if isinstance(result, BaseException):
        result = {"error": str(result)}
    line = {
        "state": state.type.value,
        "message": state.message,
        "flow_run_id": str(state.state_details.flow_run_id),
        "process_start": start,
        "result": result,
    }
    print("BENCH-RESULT " + json.dumps(line, default=str), flush=True)


if __name__ == "__main__":
    main()
