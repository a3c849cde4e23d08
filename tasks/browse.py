"""pyVmomi and HTTPS calls that look inside a datastore (no Prefect here).

The catalog mounts a snapshot copy and asks what VMs it holds: the datastore browser
finds the ``.vmx`` files, and vCenter's ``/folder`` file service serves their text so
that each VM can be named as its configuration names it. A restore reads (and, on its own
snapshot copy only, rewrites) a VM's ``.vmx`` through the same service before registering
it (:mod:`tasks.vmx_edit`).
"""

from __future__ import annotations

import http.client
import re
import ssl
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

from pyVmomi import vim

from tasks import vsphere as vs

VMX_PATTERN = "*.vmx"


class DatastoreFileNotFound(vs.VSphereError):
    """vCenter's file service answered 404: the file (or its datastore) is not there."""


MAX_VMX_BYTES = 1 << 20  # a .vmx is a few KiB; refuse to read anything far larger


@dataclass(frozen=True)
class VmxFile:
    """A VM configuration file found on a datastore."""

    folder: str  # folder inside the datastore ("" for the root)
    path: str  # path of the .vmx inside the datastore, e.g. "app-01/app-01.vmx"
    size: int | None = None
    modified: datetime | None = None

    @property
    def stem(self) -> str:
        """The file name without ``.vmx`` (what a VM is called when its .vmx cannot be read)."""
        name = self.path.rsplit("/", 1)[-1]
        return name[: -len(".vmx")] if name.lower().endswith(".vmx") else name


def folder_of(folder_path: str) -> str:
    """Return the folder inside the datastore of a browser result's ``folderPath``.

    ESXi writes ``[ds] dir/sub``, govmomi's simulator ``[ds]/dir/sub``; both (and the
    datastore root, ``[ds]``) parse the same way.
    """
    return vs.split_ds_path(folder_path)[1].strip("/")


def _hidden(folder: str) -> bool:
    """True for folders such as ``.snapshot`` (an NFS array's own snapshots) or ``.sdd.sf``."""
    return any(part.startswith(".") for part in folder.split("/") if part)


def find_vmx_files(datastore: vim.Datastore, timeout_s: float) -> list[VmxFile]:
    """Return every ``.vmx`` file on ``datastore``, in all its folders, sorted by path.

    Folders whose name starts with a dot (``.snapshot`` on NFS arrays, VMFS system
    folders) are skipped: a VM's folder never does, and an NFS array's ``.snapshot``
    folder would list every snapshot's VMs again.
    """
    spec = vim.host.DatastoreBrowser.SearchSpec(
        matchPattern=[VMX_PATTERN],
        details=vim.host.DatastoreBrowser.FileInfo.Details(
            fileType=True, fileSize=True, modification=True, fileOwner=False
        ),
    )
    task = datastore.browser.SearchDatastoreSubFolders_Task(
        datastorePath=f"[{datastore.name}]", searchSpec=spec
    )
    found: dict[str, VmxFile] = {}
    for result in vs.wait(task, timeout_s) or []:
        folder = folder_of(result.folderPath)
        if _hidden(folder):
            continue
        for f in result.file or []:
            if not f.path.lower().endswith(".vmx"):  # matchPattern is a glob: *.vmx~ etc.
                continue
            path = f"{folder}/{f.path}" if folder else f.path
            found[path] = VmxFile(
                folder=folder, path=path, size=f.fileSize, modified=f.modification
            )
    return [found[p] for p in sorted(found)]


def inventory_path(si: vim.ServiceInstance, obj: vim.ManagedEntity) -> str:
    """Return the inventory path of ``obj`` below the root folder, e.g. ``dc1`` or ``eu/dc1``."""
    root = vs.service_content(si).rootFolder
    parts = []
    while obj is not None and obj != root:  # never read the root's (unset) parent
        parts.append(obj.name)
        obj = obj.parent
    return "/".join(reversed(parts))


def file_url_path(datacenter: str, datastore: str, path: str) -> str:
    """Return the ``/folder`` URL path (with query) serving ``[datastore] path``."""
    return f"/folder/{quote(path)}?{urlencode({'dcPath': datacenter, 'dsName': datastore})}"


def _file_request(
    si: vim.ServiceInstance,
    datastore: vim.Datastore,
    path: str,
    method: str,
    body: bytes | None,
    *,
    host: str,
    port: int,
    context: ssl.SSLContext,
    timeout_s: float,
    max_bytes: int,
) -> bytes:
    dc = inventory_path(si, vs.datacenter_of(datastore))  # SOAP first: a lapsed session logs in
    stub = getattr(si._stub, "soapStub", si._stub)  # under the session-oriented stub, if any
    cookie = (stub.cookie or "").split(";", 1)[0]
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout_s)
    headers = {"Cookie": cookie}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    try:
        conn.request(method, file_url_path(dc, datastore.name, path), body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(max_bytes + 1)
    finally:
        conn.close()
    if resp.status not in (200, 201, 204):
        verb = "reading" if method == "GET" else "writing"
        error = DatastoreFileNotFound if resp.status == 404 else vs.VSphereError
        raise error(
            f"{verb} [{datastore.name}] {path} through vCenter gave HTTP {resp.status} "
            f"{resp.reason}"
        )
    if len(data) > max_bytes:
        raise vs.VSphereError(f"[{datastore.name}] {path} is larger than {max_bytes} bytes")
    return data


def read_datastore_file(
    si: vim.ServiceInstance,
    datastore: vim.Datastore,
    path: str,
    *,
    host: str,
    port: int,
    context: ssl.SSLContext,
    timeout_s: float,
    max_bytes: int = MAX_VMX_BYTES,
) -> bytes:
    """Return the content of ``[datastore] path`` through vCenter's ``/folder`` service.

    The request carries the SOAP session's cookie, so it has exactly the rights of the
    session ``si``; TLS is verified with ``context``. Raises VSphereError for an HTTP error
    or a file larger than ``max_bytes``.
    """
    return _file_request(
        si,
        datastore,
        path,
        "GET",
        None,
        host=host,
        port=port,
        context=context,
        timeout_s=timeout_s,
        max_bytes=max_bytes,
    )


def write_datastore_file(
    si: vim.ServiceInstance,
    datastore: vim.Datastore,
    path: str,
    content: bytes,
    *,
    host: str,
    port: int,
    context: ssl.SSLContext,
    timeout_s: float,
) -> None:
    """Replace ``[datastore] path`` with ``content`` through vCenter's ``/folder`` service
    (HTTP PUT, with the SOAP session's cookie). Raises VSphereError for an HTTP error."""
    _file_request(
        si,
        datastore,
        path,
        "PUT",
        content,
        host=host,
        port=port,
        context=context,
        timeout_s=timeout_s,
        max_bytes=MAX_VMX_BYTES,
    )


_VMX_ESCAPE = re.compile(rb"\|([0-9A-Fa-f]{2})")


def _unescape(value: str) -> str:
    """Decode ESXi's ``|XX`` escapes (bytes of the UTF-8 text) in a .vmx value."""
    if "|" not in value:
        return value
    raw = _VMX_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), value.encode())
    return raw.decode("utf-8", errors="replace")


def parse_vmx(text: str) -> dict[str, str]:
    """Parse a .vmx file into ``{key: value}``; keys are lower-cased (ESXi ignores case).

    Values lose their quotes and ESXi's ``|XX`` hex escapes are decoded (``|22`` is ``"``).
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[key.strip().lower()] = _unescape(value)
    return out
