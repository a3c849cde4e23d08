"""ONTAP asynchronous jobs: ``202`` + job link, ``/api/cluster/jobs``, ``return_timeout``.

Operations that ONTAP runs as jobs (volume create/clone/modify/delete, snapshot create/delete)
are split in two: the handler validates the request's shape synchronously (bad fields and
missing objects named in the URL are answered at once), then queues a job whose operation does
the real work and may fail (duplicate names, objects in use, unknown references). Jobs run in
order on one worker thread, ``job_delay_s`` (config ``extra``, default 0.05 s) after they are
picked up, so clients must poll; with ``return_timeout`` > 0 the job runs before the answer and
the call returns 201/200 (or the job's error), as ONTAP does when the job finishes in time.
Jobs are part of the persisted state; a restarted emulator finishes the ones still pending.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from lab.arrays.base import Call
from lab.arrays.ontap import hal
from lab.arrays.ontap.common import now_iso

log = logging.getLogger("lab.arrays.ontap")

JOB_FIELDS = hal.fieldset(
    "uuid description state message code start_time end_time error.message error.code "
    "svm.name svm.uuid"
)
PENDING = ("queued", "running")
_KEEP_FINISHED = 500


class JobFailure(Exception):
    """Raised by a job operation: the job ends in state ``failure`` with this message/code."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


class JobsMixin:
    """Job bookkeeping for :class:`lab.arrays.ontap.OntapEmulator`."""

    state: dict[str, Any]
    lock: threading.RLock
    config: Any
    save: Callable[[], None]
    _push_fabric: Callable[[], None]
    job_operations: Callable[[], dict[str, Callable[[dict[str, Any]], str | None]]]

    # ---- lifecycle ---------------------------------------------------------------------------

    def start_jobs(self) -> None:
        """Start the job worker and queue the jobs a previous process left pending."""
        self._job_queue: queue.Queue[str] = queue.Queue()
        self._job_delay = float(self.config.extra.get("job_delay_s", 0.05))
        with self.lock:
            for job_id in self.state["job_order"]:
                if self.state["jobs"][job_id]["state"] in PENDING:
                    self._job_queue.put(job_id)
        threading.Thread(target=self._job_worker, name="ontap-jobs", daemon=True).start()

    def _job_worker(self) -> None:
        while True:
            job_id = self._job_queue.get()
            with self.lock:
                job = self.state["jobs"].get(job_id)
                if job is None or job["state"] not in PENDING:
                    continue
                job["state"] = "running"
                job["message"] = "Job is running."
                self.save()
            time.sleep(self._job_delay)
            with self.lock:
                self._execute(job_id)
                self.save()
            self._push_fabric()

    def _execute(self, job_id: str) -> None:
        job = self.state["jobs"].get(job_id)
        if job is None or job["state"] not in PENDING:
            return
        op = job["op"]
        try:
            message = self.job_operations()[op["kind"]](op)
            job.update(state="success", message=message or "success", code=0)
        except JobFailure as failure:
            job.update(
                state="failure",
                message=failure.message,
                code=int(failure.code),
                error={"message": failure.message, "code": str(failure.code)},
            )
        except Exception as exc:  # a lab bug: fail the job loudly rather than hang clients
            log.exception("ONTAP job %s (%s) crashed", job_id, op["kind"])
            job.update(state="failure", message=f"lab: internal error: {exc}", code=1)
            job["error"] = {"message": job["message"], "code": "1"}
        job["end_time"] = now_iso()

    def _run_through(self, job_id: str) -> None:
        """Run every pending job up to and including ``job_id``, in order (caller holds lock)."""
        for queued in list(self.state["job_order"]):
            self._execute(queued)
            if queued == job_id:
                return

    def _prune_jobs(self) -> None:
        order = self.state["job_order"]
        finished = [j for j in order if self.state["jobs"][j]["state"] not in PENDING]
        for job_id in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            order.remove(job_id)
            del self.state["jobs"][job_id]

    # ---- the asynchronous answer -------------------------------------------------------------

    def submit_job(
        self,
        call: Call,
        op: dict[str, Any],
        location: str | None = None,
        provisional: dict[str, Any] | None = None,
        final: Callable[[], dict[str, Any] | None] | None = None,
    ) -> Response:
        """Queue ``op`` as a job and answer the call the way ONTAP does.

        ``provisional`` is the record returned with ``return_records=true`` while the job is
        pending; ``final`` builds it once the job is done (within ``return_timeout``).
        """
        timeout = hal.return_timeout(call.query)
        want_records = hal.query_bool(call.query, "return_records", False)
        job_id = str(uuidlib.uuid4())
        self.state["jobs"][job_id] = {
            "uuid": job_id,
            "description": f"{call.method} {call.path}",
            "state": "queued",
            "message": "Job is queued.",
            "code": 0,
            "start_time": now_iso(),
            "op": op,
        }
        self.state["job_order"].append(job_id)
        self._prune_jobs()
        body: dict[str, Any] = {"job": self._job_link(job_id)}
        headers = {"Location": location} if location else None
        if timeout > 0:
            self._run_through(job_id)
            job = self.state["jobs"][job_id]
            if job["state"] == "failure":
                code = str(job["error"]["code"])
                raise hal.OntapError(hal.status_for(code), job["message"], code)
            record = final() if final else None
            if want_records and record is not None:
                body = {"num_records": 1, "records": [record], **body}
            return hal.hal(body, 201 if call.method == "POST" else 200, headers)
        self._job_queue.put(job_id)
        if want_records and provisional is not None:
            body = {"num_records": 1, "records": [provisional], **body}
        return hal.hal(body, 202, headers)

    @staticmethod
    def _job_link(job_id: str) -> dict[str, Any]:
        return {"uuid": job_id, "_links": {"self": {"href": f"/api/cluster/jobs/{job_id}"}}}

    # ---- /api/cluster/jobs -------------------------------------------------------------------

    def job_routes(self) -> list[tuple[str, str, Callable[[Call], Response]]]:
        """Return the job endpoints."""
        return [
            ("GET", "/api/cluster/jobs", self.get_jobs),
            ("GET", "/api/cluster/jobs/{uuid}", self.get_job),
        ]

    def _job_record(self, job: dict[str, Any]) -> dict[str, Any]:
        record = {k: v for k, v in job.items() if k != "op"}
        record["_links"] = {"self": {"href": f"/api/cluster/jobs/{job['uuid']}"}}
        return record

    def get_jobs(self, call: Call) -> Response:
        """``GET /api/cluster/jobs``."""
        records = [self._job_record(self.state["jobs"][j]) for j in self.state["job_order"]]
        return hal.collection(call.query, "/api/cluster/jobs", records, JOB_FIELDS, ["uuid"])

    def get_job(self, call: Call) -> Response:
        """``GET /api/cluster/jobs/{uuid}``: state queued/running/success/failure."""
        job = self.state["jobs"].get(call.params["uuid"])
        if job is None:
            raise hal.not_found(f"job {call.params['uuid']}")
        return hal.single(call.query, self._job_record(job), JOB_FIELDS)
