from __future__ import annotations

import pytest

from timeseries.influx import split_lines
from timeseries.lineprotocol import (
    FieldType,
    FieldTypeConflict,
    FieldTypes,
    LineProtocolError,
    Point,
    encode_point,
    format_field,
)


def test_escaping_follows_influx_rules() -> None:
    point = Point(
        "my meas,x",
        {"tag key": "a,b=c d", "empty": ""},
        {"f=k,1": 'he said "hi" \\ back\nslash'},
        1,
    )
    assert encode_point(point) == (
        'my\\ meas\\,x,tag\\ key=a\\,b\\=c\\ d f\\=k\\,1="he said \\"hi\\" \\\\ back\nslash" 1'
    )


def test_tags_are_sorted_and_types_formatted() -> None:
    point = Point("m", {"z": "1", "a": "2"}, {"f": 1.0, "i": 3, "b": True, "s": "x"}, 5)
    assert encode_point(point) == 'm,a=2,z=1 f=1.0,i=3i,b=true,s="x" 5'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 2**63])
def test_values_influx_cannot_store_are_refused(value: float) -> None:
    with pytest.raises(LineProtocolError):
        format_field(value)


@pytest.mark.parametrize(
    "point",
    [
        Point("m", {"t": "line\nbreak"}, {"f": 1.0}, 1),
        Point("m", {"t": "ends\\"}, {"f": 1.0}, 1),
        Point("", {}, {"f": 1.0}, 1),
        Point("m", {}, {}, 1),
    ],
)
def test_unrepresentable_names_are_refused(point: Point) -> None:
    with pytest.raises(LineProtocolError):
        encode_point(point)


def test_field_types_are_kept_stable() -> None:
    types = FieldTypes()
    types.seed([("telemetry", "fault", FieldType.STRING)])
    types.claim("telemetry", {"temp_c": 1.0, "fault": ""})
    types.claim("telemetry", {"temp_c": 2.0})
    with pytest.raises(FieldTypeConflict, match="'temp_c' of 'telemetry' is stored as float"):
        types.claim("telemetry", {"temp_c": True})
    with pytest.raises(FieldTypeConflict, match="stored as string"):
        types.claim("telemetry", {"fault": 3})
    types.claim("other", {"temp_c": "a"})  # another measurement has its own types


def test_split_lines_respects_newlines_inside_strings() -> None:
    body = b'm f="a\nb" 1\nm,t=x\\ y f="q\\"\n" 2\nm f=1 3'
    assert split_lines(body) == [b'm f="a\nb" 1', b'm,t=x\\ y f="q\\"\n" 2', b"m f=1 3"]
    assert split_lines(b"m f=1 1\nm f=2 2") == [b"m f=1 1", b"m f=2 2"]
