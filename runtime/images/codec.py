"""The JSON form of the checkpoint model, derived from its dataclass declarations.

Why derived: model.py is the single declaration of what an image holds. The
codec reads each dataclass's type hints (typing.get_type_hints) and turns an
object into JSON-able data and back, so a field added to the model is
written, read and type-checked without code here. Decoding is also the
first line of defence against a corrupt or hostile image: every field must
be present and of its declared type, no unknown field is accepted, and
integers must fit the u64 the kernel and the restorer's argument block
hold; strings must be text a path or name can be (no NUL, at most
PATH_MAX bytes, UTF-8 or the raw bytes Python's surrogateescape carries).
Every failure is an ImageError naming the file and the field path
(`vmas[3].start`), so a user sees which byte of which file is wrong; a
value from the file is shown shortened, never whole.

On disk: ints as JSON numbers, bytes as lowercase hex strings, enums by
their value, tuples as arrays, dataclasses as objects in declaration order,
None as null.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from runtime.errors import ImageError, shorten

U64_MAX = (1 << 64) - 1
# PATH_MAX counts the terminating NUL: a path (the longest string an image holds) has at most 4095 bytes.
STR_BYTES_MAX = 4095

T = TypeVar("T")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def _optional_inner(hint: Any) -> Any | None:
    """X for `X | None` / Optional[X], else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
        raise TypeError(f"unsupported union {hint!r}: only X | None is encodable")
    return None


@functools.cache
def _shape(hint: Any) -> tuple[str, Any]:
    """What a declared type is, for both directions: (kind, its argument), worked out once per type.

    kind is "optional" (argument: the inner type), "dataclass", "enum" (the
    class), "tuple", "dict" (the type arguments), or "int", "bool", "str",
    "bytes".
    """
    inner = _optional_inner(hint)
    if inner is not None:
        return "optional", inner
    if dataclasses.is_dataclass(hint):
        return "dataclass", hint
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "enum", hint
    origin = typing.get_origin(hint)
    if origin in (tuple, dict):
        return origin.__name__, typing.get_args(hint)
    if hint in (int, bool, str, bytes):
        return hint.__name__, hint
    raise TypeError(f"unsupported type {hint!r} in the checkpoint model")


def encode(value: Any, hint: Any = None) -> Any:
    """JSON-able data for a model object (hint: its declared type; the object's class if omitted)."""
    return _encoder(type(value) if hint is None else hint)(value)


@functools.cache
def _encoder(hint: Any) -> Callable[[Any], Any]:
    """The function that encodes a value of the declared type hint, built once per type.

    Why built: an image of a thousand threads encodes tens of thousands of
    values; reading the type hints once per type instead of once per value
    keeps the writer's time in the JSON text itself.
    """
    kind, arg = _shape(hint)
    if kind == "optional":
        encode_inner = _encoder(arg)
        return lambda value: None if value is None else encode_inner(value)
    if kind == "dataclass":
        hints = _hints(arg)
        fields = [(f.name, _encoder(hints[f.name])) for f in _fields(arg)]
        return lambda value: {name: encode_field(getattr(value, name)) for name, encode_field in fields}
    if kind == "enum":
        return lambda value: value.value
    if kind == "bytes":
        return bytes.hex
    if kind == "tuple":
        if len(arg) == 2 and arg[1] is Ellipsis:
            encode_item = _encoder(arg[0])
            return lambda value: [encode_item(item) for item in value]
        encoders = [_encoder(item_hint) for item_hint in arg]
        return lambda value: [encode_item(item) for item, encode_item in zip(value, encoders)]
    if kind == "dict":
        encode_key, encode_value = (_encoder(item_hint) for item_hint in arg)
        return lambda value: {encode_key(k): encode_value(v) for k, v in value.items()}
    return lambda value: value  # int, bool, str


def _kind(data: Any) -> str:
    return {dict: "object", list: "array", str: "str", bool: "bool", int: "int",
            float: "float", type(None): "null"}.get(type(data), type(data).__name__)


class _Decoder:
    """One decoding pass over one file; remembers the file name for its errors."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, path: str, reason: str) -> ImageError:
        return ImageError(self.file, path, reason)

    def expect(self, data: Any, kind: type, path: str, name: str) -> None:
        # bool is an int subclass in Python, but a JSON true is never a number here.
        if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
            raise self.fail(path, f"expected {name}, got {_kind(data)}")

    def decode(self, data: Any, hint: Any, path: str) -> Any:
        kind, arg = _shape(hint)
        if kind == "optional":
            return None if data is None else self.decode(data, arg, path)
        if kind == "dataclass":
            return self.dataclass(data, arg, path)
        if kind == "enum":
            return self.enum(data, arg, path)
        if kind == "tuple":
            return self.tuple(data, arg, path)
        if kind == "dict":
            return self.dict(data, arg, path)
        if kind == "int":
            self.expect(data, int, path, "int")
            if not 0 <= data <= U64_MAX:
                raise self.fail(path, f"{data} is outside 0..2**64-1")
            return data
        if kind == "bool":
            self.expect(data, bool, path, "bool")
            return data
        if kind == "str":
            self.expect(data, str, path, "str")
            return self.text(data, path)
        self.expect(data, str, path, "hex str")
        try:
            return bytes.fromhex(data)
        except ValueError:
            raise self.fail(path, "expected hex digits") from None

    def dataclass(self, data: Any, cls: type, path: str) -> Any:
        self.expect(data, dict, path, f"object ({cls.__name__})")
        fields = _fields(cls)
        names = {f.name for f in fields}
        unknown = sorted(set(data) - names)
        if unknown:
            raise self.fail(_join(path, shorten(unknown[0])), f"unknown field in {cls.__name__}")
        hints = _hints(cls)
        values = {}
        for f in fields:
            if f.name not in data:
                raise self.fail(_join(path, f.name), "missing")
            values[f.name] = self.decode(data[f.name], hints[f.name], _join(path, f.name))
        return cls(**values)

    def enum(self, data: Any, cls: type[enum.Enum], path: str) -> enum.Enum:
        try:
            return cls(data)
        except (ValueError, TypeError):
            allowed = ", ".join(repr(m.value) for m in cls)
            raise self.fail(path, f"{shorten(repr(data))} is not a {cls.__name__} ({allowed})") from None

    def tuple(self, data: Any, args: tuple, path: str) -> tuple:
        self.expect(data, list, path, "array")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(self.decode(item, args[0], f"{path}[{i}]") for i, item in enumerate(data))
        if len(data) != len(args):
            raise self.fail(path, f"expected {len(args)} entries, got {len(data)}")
        return tuple(self.decode(item, arg, f"{path}[{i}]") for i, (item, arg) in enumerate(zip(data, args)))

    def dict(self, data: Any, args: tuple, path: str) -> dict:
        self.expect(data, dict, path, "object")
        key_hint, value_hint = args
        if key_hint is not str:
            raise TypeError(f"unsupported dict key type {key_hint!r} in the checkpoint model")
        return {self.text(key, f"{path}[{shorten(repr(key))}]"): self.decode(value, value_hint,
                                                                          f"{path}[{shorten(repr(key))}]")
                for key, value in data.items()}

    def text(self, data: str, path: str) -> str:
        """data, if the system can take it as a path or a name: bytes os.fsencode can make, no NUL, PATH_MAX."""
        try:
            # JSON may carry any lone surrogate; only U+DC80..U+DCFF stand for a raw byte.
            encoded = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise self.fail(path, f"not valid UTF-8: lone surrogate U+{ord(data[exc.start]):04X} "
                                  f"at character {exc.start}") from None
        if b"\0" in encoded:
            raise self.fail(path, f"holds a NUL character at {data.index(chr(0))}")
        if len(encoded) > STR_BYTES_MAX:
            raise self.fail(path, f"{len(encoded)} bytes, longer than any path ({STR_BYTES_MAX}): "
                                  f"{shorten(data)}")
        return data


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def decode(cls: type[T], data: Any, file: str) -> T:
    """The model object of type cls in data (as json.loads gave it); ImageError names file and field."""
    return _Decoder(file).decode(data, cls, "")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: bytes, file: str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity; ImageError on anything else."""
    try:
        return json.loads(text.decode("utf-8"), object_pairs_hook=_reject_duplicates,
                          parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ImageError(file, "", f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ImageError(file, "", f"corrupt JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise ImageError(file, "", f"corrupt JSON: {exc}") from None
    except RecursionError:
        raise ImageError(file, "", "corrupt JSON: nested too deeply") from None


def dumps(obj: Any) -> bytes:
    """The file content for a model object: indented JSON, ASCII, newline-terminated.

    ASCII with \\u escapes because paths from /proc may hold bytes that are
    not UTF-8 (Python carries them as lone surrogates); the escapes bring
    them back unchanged, where UTF-8 could not encode them at all.
    """
    return (json.dumps(encode(obj), indent=1) + "\n").encode("utf-8")


def loads(cls: type[T], text: bytes, file: str) -> T:
    return decode(cls, parse_json(text, file), file)
