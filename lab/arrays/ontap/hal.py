"""ONTAP REST plumbing: error bodies, request bodies, and HAL collections with ONTAP queries.

Everything here is vendor-generic ONTAP behaviour that the resource handlers share:

- :class:`OntapError` raises an ONTAP error body ``{"error": {"message", "code", "target"}}``;
- :func:`expand` accepts request bodies written with nested objects, dotted keys, or both;
- :func:`collection` answers a collection GET: ``fields=``, dotted-field filters with the
  ONTAP query operators (``*`` wildcard, ``|`` or, ``!`` not, ``<``/``>``/``<=``/``>=``, ``a..b``),
  ``order_by``, ``max_records`` with ``_links.next``, and ``return_records=false``.

Error codes. The common codes 1, 2, 3 and 4 come from the ONTAP "Interpret an ONTAP REST API
response" page; the LUN-map codes 5374875/5374878/5374922 from the DELETE lun-maps reference.
Every other code below is a lab choice (⚠ verify against a real array): clients should branch
on the HTTP status and the documented codes only.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.responses import Response

from lab.arrays.base import HttpError

MEDIA_TYPE = "application/hal+json"

# Common codes (documented).
DUPLICATE = "1"  # 409: an object with the same identifier already exists
INVALID = "2"  # 400: a field has an invalid or missing value
NOT_SUPPORTED = "3"
NOT_FOUND = "4"  # 404 (the common table says 405; GET on a missing uuid answers 404)
# Documented operation codes (DELETE /protocols/san/lun-maps).
LUN_NOT_FOUND = "5374875"
IGROUP_NOT_FOUND = "5374878"
LUN_MAP_NOT_FOUND = "5374922"
# Lab choices (⚠ verify).
NOT_AUTHORIZED = "6"
UNEXPECTED_ARGUMENT = "262179"
INVALID_FIELD = "262197"
LUN_ALREADY_MAPPED = "5374914"
LUN_NUMBER_IN_USE = "5374915"
INITIATOR_ALREADY_MAPPED = "5374916"
LUN_MAPPED = "5374917"
IGROUP_MAPPED = "5374918"
POLICY_IN_USE = "1703954"
VOLUME_IN_USE = "917927"
SNAPSHOT_BUSY = "1638555"

_STATUS_FOR_CODE = {DUPLICATE: 409, NOT_FOUND: 404}

# Query parameters that are not field filters.
CONTROL_PARAMS = frozenset(
    {"fields", "max_records", "return_records", "return_timeout", "order_by", "start.offset"}
)


def error_body(message: str, code: str, target: str | None = None) -> dict[str, Any]:
    """Return the ONTAP error document for ``message`` and ``code`` (a string)."""
    err: dict[str, Any] = {"message": message, "code": str(code)}
    if target:
        err["target"] = target
    return {"error": err}


def hal(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Return ``content`` as an ``application/hal+json`` response."""
    body = json.dumps(content, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


class OntapError(HttpError):
    """Raised by a handler to answer with an ONTAP error body."""

    def __init__(self, status: int, message: str, code: str, target: str | None = None):
        super().__init__(hal(error_body(message, code, target), status))
        self.status = status
        self.message = message
        self.code = code


def status_for(code: str) -> int:
    """Return the HTTP status ONTAP uses for an error ``code`` that has no fixed one."""
    return _STATUS_FOR_CODE.get(str(code), 400)


def not_found(what: str, target: str = "uuid") -> OntapError:
    """Return the common "entry doesn't exist" error for ``what``."""
    return OntapError(404, f"entry doesn't exist: {what}", NOT_FOUND, target)


def invalid(message: str, target: str | None = None) -> OntapError:
    """Return the common invalid-value error."""
    return OntapError(400, message, INVALID, target)


# ---- field sets -----------------------------------------------------------------------------


def fieldset(spec: str) -> frozenset[str]:
    """Return the dotted fields named in ``spec`` (whitespace separated) and all their prefixes."""
    out: set[str] = set()
    for path in spec.split():
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            out.add(".".join(parts[:i]))
    return frozenset(out)


# ---- request bodies -------------------------------------------------------------------------


def expand(body: Any) -> dict[str, Any]:
    """Return ``body`` with dotted keys turned into nested objects (both forms may be mixed)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            value = expand(value)
        elif isinstance(value, list):
            value = [expand(v) if isinstance(v, dict) else v for v in value]
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = _merge(node[last], value)
        else:
            node[last] = value
    return out


def leaf_items(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Yield (dotted path, value) for every leaf of a nested body; list items share a path."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaf_items(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list) and any(isinstance(v, dict) for v in node):
        for item in node:
            yield from leaf_items(item, prefix)
    elif prefix:
        yield prefix, node


def check_body(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Reject a body that sets a field outside ``allowed`` (ONTAP: "Unexpected argument"), or
    gives a plain value where ``allowed`` has an object (e.g. ``"clone": "x"``)."""
    objects = {path.rsplit(".", 1)[0] for path in allowed if "." in path}
    for path, value in leaf_items(body):
        if path not in allowed:
            raise OntapError(400, f'Unexpected argument "{path}".', UNEXPECTED_ARGUMENT, path)
        if path in objects and not isinstance(value, list | dict):
            raise invalid(f'The value "{value}" is invalid for field "{path}" (an object).', path)


def get_in(node: Any, path: str, default: Any = None) -> Any:
    """Return the value at dotted ``path`` in nested dicts, or ``default``."""
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def as_bool(value: Any, field: str) -> bool:
    """Return ``value`` (a JSON boolean or "true"/"false") as a bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(
        f'The value "{value}" is invalid for field "{field}" (expected a boolean).', field
    )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def as_size(value: Any, field: str) -> int:
    """Return a size in bytes from an integer or a string such as "10GB"."""
    if isinstance(value, bool):
        raise invalid(f'The value "{value}" is invalid for field "{field}".', field)
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise invalid(f'The value "{value}" is invalid for field "{field}".', field)
        size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size <= 0:
        raise invalid(f'The value "{value}" is invalid for field "{field}".', field)
    return size


def query_bool(query: QueryParams, name: str, default: bool = False) -> bool:
    """Return the boolean query parameter ``name``."""
    if name not in query:
        return default
    return as_bool(query[name], name)


def return_timeout(query: QueryParams) -> int:
    """Return the ``return_timeout`` query parameter (0..120 seconds, default 0)."""
    raw = query.get("return_timeout", "0")
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 120:
        raise invalid(
            f'The value "{raw}" is invalid for field "return_timeout" (0-120).', "return_timeout"
        )
    return value


# ---- projections ------------------------------------------------------------------------------


_MISSING = object()


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(out[k], v) if k in out else v
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_merge(x, y) for x, y in zip(a, b, strict=True)]
    return b


def _project(node: Any, parts: list[str]) -> Any:
    if not parts:
        return copy.deepcopy(node)
    if isinstance(node, list):
        return [p for p in (_project(item, parts) for item in node) if p is not _MISSING]
    if isinstance(node, dict) and parts[0] in node:
        sub = _project(node[parts[0]], parts[1:])
        return _MISSING if sub is _MISSING else {parts[0]: sub}
    return _MISSING


def project(record: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """Return the parts of ``record`` at the dotted ``paths`` (nested like the record)."""
    out: dict[str, Any] = {}
    for path in paths:
        part = _project(record, path.split("."))
        if part is not _MISSING:
            out = _merge(out, part)
    return out


def parse_fields(query: QueryParams, known: frozenset[str]) -> list[str] | None:
    """Return the ``fields=`` list (None when absent); reject fields the object does not have."""
    raw = query.getlist("fields")
    if not raw:
        return None
    fields = [f.strip() for item in raw for f in item.split(",") if f.strip()]
    for f in fields:
        if f not in ("*", "**") and f not in known:
            raise OntapError(
                400, f'The value "{f}" is invalid for field "fields".', INVALID_FIELD, "fields"
            )
    return fields


def shape(
    record: dict[str, Any],
    fields: list[str] | None,
    keys: list[str],
    extra: Iterable[str] = (),
) -> dict[str, Any]:
    """Return ``record`` as ONTAP returns it for ``fields`` (keys, name and _links by default)."""
    if fields is not None and ("*" in fields or "**" in fields):
        return copy.deepcopy(record)
    wanted = [*keys, "_links", *extra]
    wanted += ["name"] if fields is None else fields
    return project(record, wanted)


# ---- filters ----------------------------------------------------------------------------------


def _values_at(node: Any, parts: list[str]) -> list[Any]:
    if isinstance(node, list):
        return [v for item in node for v in _values_at(item, parts)]
    if not parts:
        return [node]
    if isinstance(node, dict) and parts[0] in node:
        return _values_at(node[parts[0]], parts[1:])
    return []


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(value: Any, op: str, operand: str) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float):
        num = _as_number(operand)
        if num is None:
            return False
        left: Any = value
        right: Any = num
    else:
        left, right = str(value), operand
    return {
        "<": left < right,
        ">": left > right,
        "<=": left <= right,
        ">=": left >= right,
    }[op]


def _match_one(value: Any, pattern: str) -> bool:
    if value is None or isinstance(value, dict | list):
        return False
    for op in ("<=", ">=", "<", ">"):
        if pattern.startswith(op):
            return _compare(value, op, pattern[len(op) :])
    if ".." in pattern:
        low, _, high = pattern.partition("..")
        return _compare(value, ">=", low) and _compare(value, "<=", high)
    if isinstance(value, bool):
        return pattern.lower() == str(value).lower()
    if isinstance(value, int | float):
        num = _as_number(pattern)
        return num is not None and num == value
    if "*" in pattern:
        regex = ".*".join(re.escape(p) for p in pattern.split("*"))
        return re.fullmatch(regex, str(value), re.DOTALL) is not None
    return str(value) == pattern


def matches(record: dict[str, Any], path: str, expression: str) -> bool:
    """Return True when ``record`` satisfies the ONTAP query ``path=expression``.

    A multi-valued field (a list) matches when any of its values does; ``!x`` matches when
    none does; ``a|b`` matches when either alternative does.
    """
    values = _values_at(record, path.split("."))
    for alternative in expression.split("|"):
        if alternative.startswith("!"):
            if not any(_match_one(v, alternative[1:]) for v in values):
                return True
        elif any(_match_one(v, alternative) for v in values):
            return True
    return False


def filters(query: QueryParams, known: frozenset[str]) -> list[tuple[str, str]]:
    """Return the (field, expression) filters of ``query``; reject unknown fields."""
    out = []
    for name, value in query.multi_items():
        if name in CONTROL_PARAMS:
            continue
        if name not in known:
            raise OntapError(400, f'Unexpected argument "{name}".', UNEXPECTED_ARGUMENT, name)
        out.append((name, value))
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    if value is None:
        return (2, "")
    return (1, str(value))


def collection(
    query: QueryParams,
    path: str,
    records: list[dict[str, Any]],
    known: frozenset[str],
    keys: list[str],
) -> Response:
    """Answer a collection GET over the full ``records`` of one object type.

    ``path`` is the collection URL path (for ``_links``), ``known`` the object's fields and
    ``keys`` the fields that identify a record (always returned).
    """
    fields = parse_fields(query, known)
    wanted = filters(query, known)
    selected = [r for r in records if all(matches(r, f, e) for f, e in wanted)]

    order = query.get("order_by", "")
    if order:
        field, _, direction = order.strip().partition(" ")
        if field not in known or direction.strip() not in ("", "asc", "desc"):
            raise OntapError(
                400, f'The value "{order}" is invalid for field "order_by".', INVALID_FIELD
            )
        selected.sort(
            key=lambda r: [_sort_key(v) for v in _values_at(r, field.split("."))] or [(3, "")],
            reverse=direction.strip() == "desc",
        )

    start = _int_param(query, "start.offset", 0, minimum=0)
    limit = _int_param(query, "max_records", 0, minimum=1) if "max_records" in query else 0
    page = selected[start : start + limit] if limit else selected[start:]

    extra = [f for f, _ in wanted]
    body: dict[str, Any] = {}
    if query_bool(query, "return_records", True):
        body["records"] = [shape(r, fields, keys, extra) for r in page]
    body["num_records"] = len(page)
    params = [(k, v) for k, v in query.multi_items() if k != "start.offset"]
    links: dict[str, Any] = {"self": {"href": _href(path, query.multi_items())}}
    if limit and start + limit < len(selected):
        links["next"] = {"href": _href(path, [*params, ("start.offset", str(start + limit))])}
    body["_links"] = links
    return hal(body)


def single(query: QueryParams, record: dict[str, Any], known: frozenset[str]) -> Response:
    """Answer a GET of one object: the whole record, or the ``fields=`` part of it."""
    fields = parse_fields(query, known)
    if fields is None:
        return hal(record)
    return hal(shape(record, fields, [], ["uuid", "id", "name", "index"]))


def _int_param(query: QueryParams, name: str, default: int, minimum: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise invalid(f'The value "{raw}" is invalid for field "{name}".', name)
    return value


def _href(path: str, params: Iterable[tuple[str, str]]) -> str:
    items = list(params)
    return f"{path}?{urlencode(items)}" if items else path
