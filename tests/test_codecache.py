"""The dataclass method cache: a second run compiles nothing, and the classes it makes behave as compiled ones do."""

import dataclasses
import importlib.util
import sys

import pytest

from runtime import codecache

# A frozen dataclass with a default and a default factory: every method a frozen class gets.
SOURCE = """
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Run:
    start: int
    size: int = 4096
    names: tuple = field(default_factory=tuple)
"""


def make_class(source: str):
    namespace = {"__name__": "cached_example"}
    sys.modules["cached_example"] = type(sys)("cached_example")  # dataclasses looks its module up
    try:
        exec(source, namespace)
    finally:
        del sys.modules["cached_example"]
    return namespace["Run"]


def run_with_cache(path, source: str = SOURCE):
    """The class made from source with the cache at path installed, and the cache."""
    cache = codecache.install(str(path))
    try:
        return make_class(source), cache
    finally:
        codecache.uninstall()
        assert "exec" not in vars(dataclasses)


def check_behaviour(cls):
    run = cls(1)
    assert run == cls(1, 4096, ()) and run != cls(2) and hash(run) == hash(cls(1))
    assert repr(run) == "Run(start=1, size=4096, names=())"
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.start = 2
    assert dataclasses.replace(run, size=8).size == 8


@pytest.fixture
def writable(monkeypatch):
    """Bytecode may be written (this environment may say otherwise)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


def test_a_second_run_compiles_no_method_and_its_class_behaves_the_same(tmp_path, writable):
    path = tmp_path / "cache.bin"
    first, cache = run_with_cache(path)
    assert cache.compiled >= 6  # __init__, __repr__, __eq__, __hash__, __setattr__, __delattr__
    cache.save()
    second, again = run_with_cache(path)
    assert again.compiled == 0 and again.used == cache.used
    check_behaviour(first)
    check_behaviour(second)


def test_nothing_is_written_when_bytecode_may_not_be(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    _, cache = run_with_cache(tmp_path / "cache.bin")
    cache.save()
    assert not (tmp_path / "cache.bin").exists()


@pytest.mark.parametrize("content", [b"", b"garbage", importlib.util.MAGIC_NUMBER + b"\x00\x01",
                                     b"\x00\x00\x0d\x0a" + b"anything"])
def test_an_unreadable_or_foreign_cache_is_no_cache_and_is_replaced(tmp_path, writable, content):
    path = tmp_path / "cache.bin"
    path.write_bytes(content)
    cls, cache = run_with_cache(path)
    check_behaviour(cls)
    assert cache.compiled >= 6
    cache.save()
    assert path.read_bytes().startswith(importlib.util.MAGIC_NUMBER)
    assert run_with_cache(path)[1].compiled == 0


def test_a_changed_class_is_compiled_anew_never_taken_from_the_cache(tmp_path, writable):
    path = tmp_path / "cache.bin"
    _, cache = run_with_cache(path)
    cache.save()
    cls, again = run_with_cache(path, SOURCE.replace("names: tuple", "labels: tuple"))
    assert again.compiled > 0 and [f.name for f in dataclasses.fields(cls)] == ["start", "size", "labels"]
