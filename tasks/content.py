"""The vCenter's ServiceContent, read once per connection."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from pyVmomi import vim

_contents: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_contents_lock = threading.Lock()


def service_content(obj: Any) -> vim.ServiceInstanceContent:
    """Return the vCenter's ServiceContent (its managers and root folder) for the
    connection ``obj`` (a ServiceInstance or any object read through it). The managers do
    not change, so they are read once per connection, not once per step."""
    stub = obj._stub
    with _contents_lock:
        content = _contents.get(stub)
    if content is None:
        content = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
        with _contents_lock:
            _contents[stub] = content
    return content
