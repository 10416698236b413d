"""The `blobgen` command line: build, protocol, inspect.

Every failure blobgen knows about is a BlobError; it is printed as one line
on stderr with exit status 2, so SCons and people see exactly what is wrong.
"""

import argparse
import importlib.metadata
import os
import pathlib
import sys

from blobgen import protocol
from blobgen.build import build
from blobgen.emit import emit
from blobgen.errors import BlobError
from blobgen.inspect import inspect


def _build(args: argparse.Namespace) -> int:
    blob = build(args.name, args.object, tuple(args.require))
    emit(blob, args.out_dir)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blobgen", description="Build and inspect freestanding PIE blobs.")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="turn a laid-out object into NAME.bin/.json/-blob.h/_blob.py")
    b.add_argument("name")
    b.add_argument("object", help="the `ld -r -T ldscripts/pie.lds` output")
    b.add_argument("--out-dir", type=pathlib.Path, required=True)
    b.add_argument("--require", nargs="+", default=[], metavar="EXPORT", help="exports without the __export_ prefix")

    protocol_parser = sub.add_parser("protocol", help="render pie/protocol.toml (see blobgen protocol --help)",
                                     add_help=False)

    i = sub.add_parser("inspect", help="show what is inside a .bin, a .built-in.o or a NAME_blob.py")
    i.add_argument("file", type=pathlib.Path)
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.add_argument("--disasm", action="store_true", help="disassemble each export, up to its end")
    try:
        version = f"revive {importlib.metadata.version('revive')}"  # the installed distribution's, as the runtime's
    except importlib.metadata.PackageNotFoundError:
        version = "revive (version unknown: not installed; scripts/setup.sh installs it)"
    for each in (parser, b, protocol_parser, i):
        each.add_argument("--version", action="version", version=version, help="print the version and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["protocol"] and argv[1:] != ["--version"]:
        return protocol.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            return _build(args)
        return inspect(args.file, args.json, args.disasm)
    except BlobError as exc:
        print(f"blobgen {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
