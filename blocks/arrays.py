"""The array contract: one set of typed operations every vendor block implements.

An array block holds an array's endpoint and credentials (a Prefect block, saved on the
server) and is that vendor's driver: its methods call the vendor's REST API with
``requests``. Tasks and flows only ever see this contract.

Sessions are kept per process (not in the block, which must stay plain data so that it
can be passed to tasks and saved): :meth:`StorageArray.session` returns the live client
for this block, creating it on first use; :func:`close_all` logs every session out.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks.errors import ArrayError, ArrayTransientError
from blocks.models import (
    AccessObject,
    ArrayInfo,
    ArraySnapshot,
    ArrayVolume,
    Backing,
    CopyTag,
    HostIdentity,
    Presentation,
    Protocol,
    SnapshotCopy,
)

log = logging.getLogger(__name__)
_ca_files: dict[str, str] = {}
_ca_lock = threading.Lock()


def ca_file(pem: str) -> str:
    """Return the path of a file holding ``pem`` (written once per process, removed when
    the process exits)."""
    digest = hashlib.sha256(pem.encode()).hexdigest()
    with _ca_lock:
        path = _ca_files.get(digest)
        if path is None:
            with tempfile.NamedTemporaryFile(
                "w", prefix="snaprestore-ca-", suffix=".pem", delete=False
            ) as f:
                f.write(pem)
            path = _ca_files[digest] = f.name
        return path


@atexit.register
def _remove_ca_files() -> None:
    with _ca_lock:
        for path in _ca_files.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
        _ca_files.clear()


_locks: dict[tuple[str, ...], threading.Lock] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def resource_lock(*key: str) -> Iterator[None]:
    """Hold, within this process, the lock of one array resource (e.g. a host's access on
    one array): calls that create or remove it do not interleave."""
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        yield


TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})


class RestClient:
    """A ``requests`` session for one array: TLS as configured, timeouts, typed errors.

    ``raise_for`` maps an error response to the vendor's typed error; connection failures
    and timeouts become :class:`ArrayTransientError`.
    """

    def __init__(
        self,
        array: str,
        base_url: str,
        verify: bool | str,
        timeout_s: float,
        raise_for: Callable[[requests.Response], ArrayError],
    ):
        self.array = array
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.raise_for = raise_for
        self.session = requests.Session()
        # REQUESTS_CA_BUNDLE in the environment would otherwise replace our CA silently
        self.session.trust_env = False
        self.session.verify = verify
        self.lock = threading.RLock()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request; return the response or raise the vendor's typed error."""
        url = path if path.startswith("http") else self.base_url + path
        try:
            r = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.exceptions.SSLError as exc:
            if "certificate verify failed" in str(exc).lower():  # a retry cannot cure it
                raise ArrayError(
                    f"{method} {path}: the array's TLS certificate is not trusted ({exc}); "
                    "set ca_certificate to the PEM of the CA that issued it",
                    array=self.array,
                ) from exc
            raise ArrayTransientError(f"{method} {path}: {exc}", array=self.array) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ArrayTransientError(f"{method} {path}: {exc}", array=self.array) from exc
        if r.status_code >= 400:
            raise self.raise_for(r)
        return r

    def close(self) -> None:
        """Close the HTTP connections."""
        self.session.close()


_sessions: dict[str, Any] = {}
_sessions_lock = threading.Lock()


def close_all() -> None:
    """Log out every array session this process opened."""
    with _sessions_lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for s in sessions:
        with contextlib.suppress(Exception):  # best effort: arrays expire sessions anyway
            s.close()


atexit.register(close_all)


class StorageArray(Block, ABC):
    """Base of the array blocks: endpoint, credentials and the array contract."""

    _block_schema_capabilities: ClassVar[list[str]] = ["storage-array"]
    vendor: ClassVar[str]

    url: str = Field(description="The array's management URL, e.g. https://array.example:8080")

    @field_validator("url")
    @classmethod
    def _https_only(cls, value: str) -> str:
        """Refuse a URL that would send the array's password in clear."""
        parts = urlsplit(value.strip())
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise ValueError(
                f"{value!r}: an array URL must be https://<address>[:port] (the block's "
                "password would otherwise travel in clear)"
            )
        return value.strip()

    user: str = Field(description="API user")
    password: SecretStr = Field(description="API password")
    ca_certificate: str | None = Field(
        default=None,
        description="PEM of the CA that issued the array's certificate; "
        "leave empty to use the system's trusted CAs",
    )
    verify_tls: bool = Field(default=True, description="Verify the array's TLS certificate")
    timeout_s: float = Field(default=60.0, description="Socket timeout of each API call (s)")

    # ---- process-level session ----------------------------------------------------------

    def _verify(self) -> bool | str:
        if not self.verify_tls:
            return False
        return ca_file(self.ca_certificate) if self.ca_certificate else True

    def session(self) -> Any:
        """Return this process's live session for the array (created on first use)."""
        secret = hashlib.sha256(self.password.get_secret_value().encode()).hexdigest()[:16]
        key = (
            f"{type(self).__name__}|{self.url}|{self.user}|{secret}|{self._verify()}"
            f"|{self.timeout_s}"
        )
        with _sessions_lock:
            s = _sessions.get(key)
            if s is None:
                if not self.verify_tls:
                    log.warning(
                        "array %s: TLS certificate verification is OFF (verify_tls=false); "
                        "set ca_certificate instead so the credentials cannot be intercepted",
                        self.name,
                    )
                s = _sessions[key] = self._open_session()
            return s

    @abstractmethod
    def _open_session(self) -> Any:
        """Create the vendor session object (it must have ``close()``)."""

    @property
    def name(self) -> str:
        """The block's saved name (the array's name in snaprestore), or its URL."""
        return self._block_document_name or self.url

    # ---- the contract ---------------------------------------------------------------------

    @abstractmethod
    def describe(self) -> ArrayInfo:
        """Return what the array is and how hosts reach it."""

    @abstractmethod
    def find_volume(self, backing: Backing) -> ArrayVolume | None:
        """Return the volume behind a datastore's backing, or None if it is not on this array."""

    @abstractmethod
    def list_snapshots(self, volume: ArrayVolume) -> list[ArraySnapshot]:
        """Return the volume's snapshots, oldest first."""

    @abstractmethod
    def copy_name(self, run: str, key: str) -> str:
        """Return the deterministic, vendor-valid name of the copy for (run, key)."""

    @abstractmethod
    def create_copy(
        self, volume: ArrayVolume, snapshot: ArraySnapshot, name: str, tag: CopyTag
    ) -> SnapshotCopy:
        """Create a read-write copy of ``snapshot`` named ``name``, tagged with ``tag``.

        Idempotent on the name: a copy of that name carrying the same run's tag is
        returned as it is; one that is not ours raises ArrayConflict.
        """

    @abstractmethod
    def find_copy(self, name: str) -> SnapshotCopy | None:
        """Return the copy named ``name`` (tagged or not), or None."""

    @abstractmethod
    def present(self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol) -> Presentation:
        """Give ``host`` (only) access to ``copy`` over ``protocol``; idempotent."""

    @abstractmethod
    def unpresent(self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol) -> None:
        """Withdraw what :meth:`present` gave; nothing to withdraw is not an error."""

    @abstractmethod
    def unpresent_all(self, copy: SnapshotCopy) -> None:
        """Withdraw ``copy`` from every host it is presented to (whoever presented it), and
        remove the host objects / igroups snaprestore made that are left empty; idempotent.

        Call it only once every host has unmounted and detached the copy.
        """

    @abstractmethod
    def list_access(self) -> list[AccessObject]:
        """Return the host objects / igroups that carry snaprestore's tag, with whether a
        volume is still exported through them."""

    @abstractmethod
    def remove_access(self, access: AccessObject) -> None:
        """Delete one of snaprestore's host objects / igroups; gone already is fine.

        Raises NotOurs (and deletes nothing) when it does not carry our tag, ArrayConflict
        when a volume is exported through it.
        """

    @abstractmethod
    def delete_copy(self, copy: SnapshotCopy) -> None:
        """Delete the copy and what was made for it; idempotent.

        Raises NotOurs, and deletes nothing, when the copy does not carry our tag.
        """

    @abstractmethod
    def list_copies(self) -> list[SnapshotCopy]:
        """Return every copy on the array that carries snaprestore's tag."""
