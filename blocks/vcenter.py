"""The vCenter block: where vCenter is, how to log in, and a connected pyVmomi client."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import ssl
import threading
import time
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

log = logging.getLogger(__name__)
_connections: dict[str, Any] = {}
_checked: dict[str, float] = {}  # key -> when the session was last seen alive (monotonic)
SESSION_CHECK_S = 30.0  # a session seen alive this recently is reused without a round trip
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
        """Return a logged-in ServiceInstance (shared by this process, renewed if expired).

        A session seen alive in the last ``SESSION_CHECK_S`` seconds is returned without
        asking vCenter; a call that then fails with ``NotAuthenticated`` should call
        :func:`recheck_sessions` (the step retry does) so the next ``connect()`` logs in again.
        """
        key = self._key()
        with _lock:
            si = _connections.get(key)
            now = time.monotonic()
            if si is not None and now - _checked.get(key, -SESSION_CHECK_S) >= SESSION_CHECK_S:
                if _alive(si):
                    _checked[key] = now
                else:
                    with contextlib.suppress(Exception):
                        Disconnect(si)
                    si = None
            if si is None:
                if not self.verify_tls:
                    log.warning(
                        "vCenter %s: TLS certificate verification is OFF (verify_tls=false); "
                        "set ca_certificate instead so the credentials cannot be intercepted",
                        self.host,
                    )
                si = _connections[key] = SmartConnect(
                    host=self.host,
                    port=self.port,
                    user=self.user,
                    pwd=self.password.get_secret_value(),
                    sslContext=self.ssl_context(),
                    httpConnectionTimeout=self.timeout_s,
                )
                _checked[key] = time.monotonic()
            return si


def _alive(si: vim.ServiceInstance) -> bool:
    try:
        return si.content.sessionManager.currentSession is not None
    except Exception:
        return False


def recheck_sessions() -> None:
    """Make the next ``connect()`` of every block ask vCenter whether its session lives."""
    with _lock:
        _checked.clear()


def disconnect_all() -> None:
    """Log out every vCenter session this process opened."""
    with _lock:
        sessions = list(_connections.values())
        _connections.clear()
        _checked.clear()
    for si in sessions:
        with contextlib.suppress(Exception):
            Disconnect(si)


atexit.register(disconnect_all)
