"""Small ONTAP facts shared by the emulator's modules: names, serials, NAA ids, timestamps."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Collection
from datetime import UTC, datetime

from lab.arrays.ontap.hal import invalid

NAA_PREFIX = "naa.600a0980"
MB = 2**20

# Volume names: letters, digits and "_", starting with a letter or "_", at most 203 characters
# (inferred from the API reference, not verified on a real cluster).
_VOLUME_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,202}$")
# LUN base names and igroup / export-policy names (lab choice: ONTAP's documented character
# sets are wider for igroups; these cover every name a restore tool needs).
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,95}$")
_ALNUM = string.ascii_letters + string.digits


def now_iso() -> str:
    """Return the current time as ONTAP prints it (ISO 8601 with offset, whole seconds)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def iso(value: datetime) -> str:
    """Return ``value`` (naive values are taken as UTC) in the ONTAP timestamp format."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.replace(microsecond=0).isoformat()


def check_volume_name(name: object, field: str = "name") -> str:
    """Return ``name`` if it is a valid volume name; raise ONTAP's invalid-value error if not."""
    if not isinstance(name, str) or not _VOLUME_NAME.match(name):
        raise invalid(
            f'Invalid volume name "{name}". A volume name must start with a letter or "_", '
            'contain only letters, digits and "_", and have at most 203 characters.',
            field,
        )
    return name


def check_object_name(name: object, what: str, field: str = "name") -> str:
    """Return ``name`` if it is a valid LUN, igroup or policy name; raise if not."""
    if not isinstance(name, str) or not _OBJECT_NAME.match(name):
        raise invalid(
            f'Invalid {what} name "{name}". Use letters, digits, "_", "-" and "." '
            '(at most 96 characters, not starting with "-" or ".").',
            field,
        )
    return name


def new_serial(taken: Collection[str]) -> str:
    """Return a new 12-character LUN serial number not in ``taken``.

    Real ONTAP serials mix letters, digits and punctuation (e.g. ``819TI$X101LA``). Every lab
    serial carries ``$``, ``?`` and ``+`` so that a client which forgets to URL-encode the
    ``serial_number`` query finds nothing instead of passing by luck.
    """
    while True:
        a = "".join(secrets.choice(_ALNUM) for _ in range(9))
        serial = f"{a[:3]}${a[3:6]}?{a[6:8]}+{a[8]}"
        if serial not in taken:
            return serial


def naa_of(serial: str) -> str:
    """Return the ESXi device name of a LUN: ``naa.600a0980`` + hex of the ASCII serial."""
    return NAA_PREFIX + serial.encode("ascii").hex()
