"""InfluxDB line protocol, built here so escaping and field types are ours to guarantee.

Rules (InfluxDB 1.x to 3.x): measurement names escape commas and spaces; tag keys, tag values
and field keys escape commas, equals signs and spaces; string field values are double-quoted
with backslashes and double quotes escaped. Newlines are allowed only inside string field
values (1.x stores them as they are). Floats never carry a suffix and integers always carry
`i`, and a field keeps the type it was first written with: InfluxDB refuses a point whose field
type differs from the one already stored in the shard.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

FieldValue = float | int | bool | str  # what a field may hold


class LineProtocolError(ValueError):
    """A value cannot be written as line protocol; the message says which and why."""


class FieldTypeConflict(LineProtocolError):
    """A field would change the type InfluxDB already stores it with."""


class FieldType(StrEnum):
    """InfluxDB's names for field types, as `SHOW FIELD KEYS` reports them."""

    FLOAT = "float"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"


_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_INT64 = (-(2**63), 2**63 - 1)


def _check_name(kind: str, text: str) -> None:
    if not text:
        raise LineProtocolError(f"{kind} is empty")
    if "\n" in text or "\r" in text:
        raise LineProtocolError(f"{kind} {text[:64]!r} contains a line break")
    # A trailing backslash would escape the separator that follows it.
    if text.endswith("\\"):
        raise LineProtocolError(f"{kind} {text[:64]!r} ends with a backslash")


def escape_measurement(name: str) -> str:
    _check_name("measurement", name)
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(kind: str, text: str) -> str:
    """Escape a tag key, tag value or field key."""
    _check_name(kind, text)
    return text.translate(_KEY_ESCAPES)


def field_type(value: FieldValue) -> FieldType:
    if isinstance(value, bool):
        return FieldType.BOOLEAN
    if isinstance(value, int):
        return FieldType.INTEGER
    if isinstance(value, float):
        return FieldType.FLOAT
    return FieldType.STRING


def format_field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise LineProtocolError(f"integer {value} does not fit in 64 bits")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"{value} cannot be stored: InfluxDB has no NaN or infinity")
        return repr(value)
    return '"' + value.translate(_STRING_ESCAPES) + '"'


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    ts_ns: int


@functools.lru_cache(maxsize=65536)
def _head(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    # A device's measurement and tags repeat on every point: escape them once.
    head = escape_measurement(measurement)
    for key, value in sorted(tags):  # InfluxDB indexes faster with tags in key order
        if value == "":
            continue  # an empty tag value is the same as no tag
        head += f",{escape_key('tag key', key)}={escape_key('tag value', value)}"
    return head


def encode_point(point: Point) -> str:
    if not point.fields:
        raise LineProtocolError(f"point in {point.measurement!r} has no fields")
    head = _head(point.measurement, tuple(point.tags.items()))
    fields = ",".join(
        f"{escape_key('field key', k)}={format_field(v)}" for k, v in point.fields.items()
    )
    return f"{head} {fields} {point.ts_ns}"


class FieldTypes:
    """The type each (measurement, field) was first written with, to refuse conflicts early.

    Seeded from InfluxDB's `SHOW FIELD KEYS` at start so that data already stored counts too.
    Shared by the MQTT thread (which encodes) and the writer (which seeds it): hence the lock.
    """

    def __init__(self) -> None:
        self._types: dict[tuple[str, str], FieldType] = {}
        self._lock = threading.Lock()

    def seed(self, known: Iterable[tuple[str, str, FieldType]]) -> None:
        with self._lock:
            for measurement, field, ftype in known:
                self._types.setdefault((measurement, field), ftype)

    def claim(self, measurement: str, fields: Mapping[str, FieldValue]) -> None:
        """Record the fields' types, or raise LineProtocolError naming the first conflict."""
        with self._lock:
            for name, value in fields.items():
                ftype = field_type(value)
                known = self._types.setdefault((measurement, name), ftype)
                if known is not ftype:
                    raise FieldTypeConflict(
                        f"field {name!r} of {measurement!r} is stored as {known}, "
                        f"got {ftype} {value!r:.64}"
                    )
