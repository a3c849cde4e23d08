"""The vCenter block: where vCenter is, how to log in, and a connected pyVmomi client."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import ssl
import threading
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from pyVim.connect import Disconnect, SmartStubAdapter, VimSessionOrientedStub
from pyVmomi import vim
from pyVmomi.SoapAdapter import StubAdapterBase

log = logging.getLogger(__name__)
_connections: dict[str, Any] = {}
_lock = threading.Lock()


class VCenterCredentials(Block):
    """A vCenter Server (or a standalone ESXi host) and the account snaprestore uses.

    ``connect()`` returns a logged-in pyVmomi ServiceInstance, reused by every task of the
    process and logged in again when the session has expired.
    """

    _block_type_name = "vCenter Credentials"
    _block_type_slug = "vcenter-credentials"
    _description = "vCenter Server address and credentials for snaprestore."

    host: str = Field(description="vCenter host name or address")
    port: int = Field(default=443, description="HTTPS port")
    user: str = Field(description="user, e.g. administrator@vsphere.local")
    password: SecretStr = Field(description="password")
    ca_certificate: str | None = Field(
        default=None,
        description="PEM of the CA that issued vCenter's certificate; "
        "leave empty to use the system's trusted CAs",
    )
    verify_tls: bool = Field(default=True, description="Verify vCenter's TLS certificate")
    timeout_s: float = Field(
        default=600,
        description="socket timeout of each vSphere call (s); storage calls can take minutes",
    )

    def _key(self) -> str:
        secret = hashlib.sha256(self.password.get_secret_value().encode()).hexdigest()[:16]
        ca = hashlib.sha256((self.ca_certificate or "").encode()).hexdigest()[:16]
        return (
            f"{self.host}:{self.port}|{self.user}|{secret}|{self.verify_tls}|{ca}|{self.timeout_s}"
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Return the TLS context vCenter connections use."""
        if not self.verify_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.ca_certificate:
            return ssl.create_default_context(cadata=self.ca_certificate)
        return ssl.create_default_context()

    def connect(self) -> vim.ServiceInstance:
        """Return a logged-in ServiceInstance, shared by every task of this process.

        Its session logs in again by itself when vCenter has ended or expired it
        (pyVmomi's session-oriented stub, on ``NotAuthenticated``), so callers never see
        a dead session and no call is spent checking one.
        """
        key = self._key()
        with _lock:
            si = _connections.get(key)
            if si is None:
                if not self.verify_tls:
                    log.warning(
                        "vCenter %s: TLS certificate verification is OFF (verify_tls=false); "
                        "set ca_certificate instead so the credentials cannot be intercepted",
                        self.host,
                    )
                stub = SmartStubAdapter(
                    host=self.host,
                    port=self.port,
                    sslContext=self.ssl_context(),
                    httpConnectionTimeout=self.timeout_s,
                )
                login = VimSessionOrientedStub.makeUserLoginMethod(
                    self.user, self.password.get_secret_value()
                )
                session = _SessionStub(stub, login)
                si = vim.ServiceInstance("ServiceInstance", session)
                _ = si.content.sessionManager.currentSession  # log in now: bad credentials fail
                _connections[key] = si
            return si


class _SessionStub(VimSessionOrientedStub):
    """pyVmomi's session stub, re-sending a call only after ``NotAuthenticated`` (vCenter
    refused it, so sending it again is safe). A transport error goes up to the step's own
    retry, which first checks whether the call took effect: re-sending RegisterVM or
    PowerOnVM blindly could do the work twice."""

    def __init__(self, soap_stub: Any, login: Any):
        super().__init__(soap_stub, login, retryDelay=0, retryCount=1)

    def InvokeMethod(self, mo: Any, info: Any, args: Any) -> Any:
        for attempt in (1, 2):
            if self.state == self.STATE_UNAUTHENTICATED:
                self._CallLoginMethod()
            status, obj = self.soapStub.InvokeMethod(mo, info, args, self)
            if status == 200:
                return obj
            if attempt == 1 and isinstance(obj, self.SESSION_EXCEPTIONS):
                self._SetStateUnauthenticated()  # the session ended: log in, send it again
                continue
            raise obj
        raise AssertionError("unreachable")

    def InvokeAccessor(self, mo: Any, info: Any) -> Any:
        # a property read is a Fetch through InvokeMethod above: no retry loop of its own
        return StubAdapterBase.InvokeAccessor(self, mo, info)


def disconnect_all() -> None:
    """Log out every vCenter session this process opened."""
    with _lock:
        sessions = list(_connections.values())
        _connections.clear()
    for si in sessions:
        with contextlib.suppress(Exception):
            Disconnect(si)


atexit.register(disconnect_all)
