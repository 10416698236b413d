"""The image codec: every model type round-trips, and every malformed input is one ImageError."""

import dataclasses
import enum
import json
import types
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import ImageError
from runtime.images import codec
from runtime.images.model import Inventory, Process, Vma, VmaKind

U64 = st.integers(0, 2**64 - 1)


def strategy_for(hint) -> st.SearchStrategy:
    """Any value of a model type, built from its declaration as the codec reads it."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return st.none() | strategy_for(inner)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return st.builds(hint, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(hint)})
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if origin is dict:
        key, value = typing.get_args(hint)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=3)
    return {int: U64, bool: st.booleans(), bytes: st.binary(max_size=16),
            # Text a path can be (the codec refuses NUL): UTF-8, or raw bytes carried as U+DC80..U+DCFF.
            str: st.text(st.characters(codec="utf-8", exclude_characters="\0") | st.sampled_from(["\udcff", "\udc80"]),
                         max_size=12)}[hint]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(strategy_for(Process))
def test_every_process_round_trips_through_the_file_format(process):
    assert codec.loads(Process, codec.dumps(process), "process-1.json") == process


@given(strategy_for(Inventory))
def test_every_inventory_round_trips_through_the_file_format(inventory):
    assert codec.loads(Inventory, codec.dumps(inventory), "inventory.json") == inventory


def test_a_path_with_bytes_that_are_not_utf8_comes_back_unchanged():
    vma = Vma(0x1000, 0x2000, 5, False, VmaKind.FILE, path="/tmp/\udcff\udcfe.so")
    text = codec.dumps(vma)
    assert text.isascii()
    assert codec.loads(Vma, text, "process-1.json") == vma


def minimal(hint):
    """The smallest value of a model type: zeros, empty strings and tuples, None, first enum member."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return None
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(**{f.name: minimal(hints[f.name]) for f in dataclasses.fields(hint)})
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(iter(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        return () if args[-1] is Ellipsis else tuple(minimal(a) for a in args)
    return {int: 0, bool: False, bytes: b"", str: "", dict: {}}.get(hint, {} if origin is dict else None)


def _process_data() -> dict:
    data = codec.encode(minimal(Process))
    data["vmas"] = [codec.encode(Vma(0x1000 * i, 0x1000 * (i + 1), 3, False, VmaKind.ANON)) for i in range(1, 5)]
    return data


@pytest.mark.parametrize("spoil, message", [
    (lambda d: d["vmas"][3].update(start="0x1000"), "process-9.json: vmas[3].start: expected int, got str"),
    (lambda d: d["vmas"][2].pop("end"), "process-9.json: vmas[2].end: missing"),
    (lambda d: d["vmas"][1].update(colour="red"), "process-9.json: vmas[1].colour: unknown field in Vma"),
    (lambda d: d["vmas"][0].update(kind="socket"), "process-9.json: vmas[0].kind: 'socket' is not a VmaKind"),
    (lambda d: d["vmas"][0].update(shared=1), "process-9.json: vmas[0].shared: expected bool, got int"),
    (lambda d: d["vmas"][0].update(prot=True), "process-9.json: vmas[0].prot: expected int, got bool"),
    (lambda d: d["vmas"][0].update(end=2**64), "process-9.json: vmas[0].end: 18446744073709551616 is outside"),
    (lambda d: d["vmas"][0].update(end=-1), "process-9.json: vmas[0].end: -1 is outside"),
    (lambda d: d["vmas"][0].update(offset=1.5), "process-9.json: vmas[0].offset: expected int, got float"),
    (lambda d: d["creds"].update(uids=[0, 0, 0]), "process-9.json: creds.uids: expected 4 entries, got 3"),
    (lambda d: d.update(shared_pending=["zz"]), "process-9.json: shared_pending[0]: expected hex digits"),
    (lambda d: d.update(threads={}), "process-9.json: threads: expected array, got object"),
    (lambda d: d.update(vdso=[]), "process-9.json: vdso: expected object (VdsoInfo), got array"),
])
def test_a_malformed_field_is_named_by_file_and_path(spoil, message):
    data = _process_data()
    spoil(data)
    with pytest.raises(ImageError) as caught:
        codec.loads(Process, json.dumps(data).encode(), "process-9.json")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'{"a": 1', "corrupt JSON at line 1"),
    (b'\xff\xfe', "not UTF-8 text"),
    (b'[' * 100000, "corrupt JSON"),
])
def test_text_that_is_not_strict_json_is_refused(text, message):
    with pytest.raises(ImageError) as caught:
        codec.parse_json(text, "process-9.json")
    assert str(caught.value).startswith("process-9.json: ")
    assert message in str(caught.value)


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_decode_or_raise_image_error_only(text):
    try:
        codec.loads(Process, text, "process-9.json")
    except ImageError:
        pass


@pytest.mark.parametrize("text, message", [
    ("/a\0b", "path: holds a NUL character at 2"),
    ("/\ud800", "path: not valid UTF-8: lone surrogate U+D800 at character 1"),
    ("/" + "é" * 2048, "path: 4097 bytes, longer than any path (4095): /éééé"),
])
def test_a_string_no_path_can_be_is_refused_by_field(text, message):
    vma = json.loads(codec.dumps(Vma(0x1000, 0x2000, 5, False, VmaKind.FILE, path="/lib.so")))
    vma["path"] = text
    with pytest.raises(ImageError) as caught:
        codec.decode(Vma, vma, "process-1.json")
    assert str(caught.value).startswith(f"process-1.json: {message}")
    assert len(str(caught.value)) < 200


def test_a_long_unknown_field_and_enum_value_are_shown_shortened():
    vma = json.loads(codec.dumps(Vma(0x1000, 0x2000, 5, False, VmaKind.FILE, path="/lib.so")))
    with pytest.raises(ImageError) as caught:
        codec.decode(Vma, {**vma, "kind": "k" * 100_000}, "process-1.json")
    assert "(100002 characters) is not a VmaKind" in str(caught.value) and len(str(caught.value)) < 300
    with pytest.raises(ImageError) as caught:
        codec.decode(Vma, {**vma, "u" * 100_000: 1}, "process-1.json")
    assert str(caught.value).endswith("... (100000 characters): unknown field in Vma")
