"""The `python -m runtime` command line: one subcommand per job, errors as one line.

Why one module: every subcommand shares the same contract with its user
(criu-like options, exit status 0 on success, 1 on a failed operation with
one line on stderr, 2 on bad usage, which argparse gives), so the contract
is kept here once and each subcommand only adds its parser and its function.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import NoReturn

from runtime import codecache
from runtime.errors import ReviveError, shorten

# Each subcommand imports what it needs inside its own function, when it runs: a dump of a small process
# takes tens of milliseconds, and importing every command's modules (pyroute2, rich, the convert code) up
# front would cost more than that (issue 18; tests/test_startup.py checks what `import runtime.cli` loads).

PARASITE_COMMANDS = ("noop", "echo", "misc", "sigactions", "thread")
# runtime.mm.vdso.VdsoMode's values, the first the default: named here so that building the parser imports no
# checkpoint model (tests/test_startup.py checks that they are the enum's).
VDSO_MODES = ("auto", "remap", "proxy")
# Longer than any message the runtime composes; a longer one is cut, never spread over lines.
MESSAGE_SHOWN_MAX = 2000


def _parasite(args: argparse.Namespace) -> None:
    if args.cmd == "echo" and args.value is None:
        raise SystemExit(_usage_error("parasite echo needs a VALUE"))
    if args.cmd != "echo" and args.value is not None:
        raise SystemExit(_usage_error(f"parasite {args.cmd} takes no VALUE"))
    from runtime.infect.session import infect

    with infect(args.pid) as parasite:
        if args.cmd == "noop":
            result = parasite.noop()
        elif args.cmd == "echo":
            result = {"value": args.value, "echoed": parasite.echo(args.value)}
        elif args.cmd == "misc":
            result = parasite.get_misc()
        elif args.cmd == "sigactions":
            result = {str(sig): action for sig, action in enumerate(parasite.dump_sigactions(), 1)}
        else:
            result = parasite.dump_thread()
    _print(result, args.json)


def _dump(args: argparse.Namespace) -> None:
    from runtime.dump import DumpOptions, dump

    dump(args.pid, args.images_dir, DumpOptions(leave_running=args.leave_running, shell_job=args.shell_job,
                                                force_dir=args.force_dir, ghost_limit=args.ghost_limit,
                                                ext_unix_sk=args.ext_unix_sk, external=frozenset(args.external),
                                                tcp_established=args.tcp_established, tcp_close=args.tcp_close))


def _restore(args: argparse.Namespace) -> None:
    from runtime.mm.vdso import VdsoMode

    if args.new_pid:
        if args.shell_job:
            raise SystemExit(_usage_error("restore --new-pid cannot take the caller's session (--shell-job): "
                                          "the copy has a PID namespace of its own"))
        from runtime.restore.new_pid import restore_in_new_namespace

        status, root = restore_in_new_namespace(args.images_dir, args.restore_detached,
                                                vdso_mode=VdsoMode(args.vdso), inherit_fds=tuple(args.inherit_fd))
        if args.restore_detached:
            print(f"restored in a new PID namespace: pid {root}", flush=True)
    else:
        from runtime.restore import restore

        status = restore(args.images_dir, detach=args.restore_detached, shell_job=args.shell_job,
                         vdso_mode=VdsoMode(args.vdso), inherit_fds=tuple(args.inherit_fd))
    if status:
        raise SystemExit(status)


def _show(args: argparse.Namespace) -> None:
    from runtime.show import show

    show(args.directory, args.json)


def _core(args: argparse.Namespace) -> None:
    from runtime.convert.core import write_core  # only this command writes ELF files

    write_core(args.images_dir, args.output, args.pid)


def _exe(args: argparse.Namespace) -> None:
    from runtime.convert.exe import write_exe  # only this command writes executables

    write_exe(args.images_dir, args.output, args.pid, args.standalone)


def _check(args: argparse.Namespace) -> None:
    from runtime.check import check

    status = check(args.json)
    if status:
        raise SystemExit(status)


def version_text() -> str:
    """`revive VERSION`, the version being the installed distribution's (pyproject.toml's, nowhere else).

    From a checkout that was never installed every other command still works: only --version says so.
    """
    import importlib.metadata  # tens of milliseconds (it reads the installed distributions): only when asked

    try:
        return f"revive {importlib.metadata.version('revive')}"
    except importlib.metadata.PackageNotFoundError:
        return "revive (version unknown: not installed; scripts/setup.sh installs it)"


class _Version(argparse.Action):
    """--version, whose text (version_text) is looked up only when the option is given, not for every command."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", dest="verbosity", action="count", default=0,
                        help="more log messages: -v progress, -vv debugging")
    parser.add_argument("-o", "--log-file", metavar="LOG", help="write the log to LOG instead of stderr")


def _setup_logging(args: argparse.Namespace) -> None:
    level = (logging.WARNING, logging.INFO)[args.verbosity] if args.verbosity < 2 else logging.DEBUG
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _print(result, as_json: bool) -> None:
    plain = _plain(result)
    if as_json:
        print(json.dumps(plain, indent=2))
    elif isinstance(plain, dict):
        for key, value in plain.items():
            print(f"{key}: {value}")
    elif plain is not None:
        print(plain)
    else:
        print("ok")


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _usage_error(message: str) -> int:
    build_parser().print_usage(sys.stderr)
    print(f"revive: error: {message}", file=sys.stderr)
    return 2


def _int(text: str) -> int:
    return int(text, 0)


def _parsed(parse):
    """parse(text) as an argparse type: its ValueError becomes argparse's usage error."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__
    return convert


def _inherit_type(name: str):
    """runtime.files.inherit's parser NAME as an argparse type, its module imported only when the option is given."""
    def parse(text: str):
        from runtime.files import inherit

        return getattr(inherit, name)(text)
    parse.__name__ = name
    return _parsed(parse)


def _size(text: str) -> int:
    """A byte count with an optional K, M or G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    try:
        return int(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime",
                                     description="Checkpoint and restore live Linux x86_64 processes.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    parasite = commands.add_parser("parasite", help="run one parasite command inside a live process",
                                   description="Infect PID, run one parasite command, cure, print the result.")
    parasite.add_argument("-t", "--tree", dest="pid", type=int, required=True, metavar="PID",
                          help="the process to infect")
    parasite.add_argument("--json", action="store_true", help="print the result as JSON")
    parasite.add_argument("cmd", choices=PARASITE_COMMANDS, metavar="CMD",
                          help="one of: " + ", ".join(PARASITE_COMMANDS))
    parasite.add_argument("value", nargs="?", type=_int, metavar="VALUE", help="the value for echo")
    parasite.set_defaults(run=_parasite)

    dump_parser = commands.add_parser("dump", help="checkpoint a process tree into an image directory",
                                      description="Checkpoint process PID and all its descendants into DIR; they "
                                                  "are killed afterwards unless --leave-running is given.")
    dump_parser.add_argument("-t", "--tree", dest="pid", type=int, required=True, metavar="PID",
                             help="the root of the tree to dump")
    dump_parser.add_argument("-D", "--images-dir", required=True, metavar="DIR", help="where to write the images")
    dump_parser.add_argument("--leave-running", action="store_true", help="let the tree run on after the dump")
    dump_parser.add_argument("--force-dir", action="store_true",
                             help="accept an image directory of your own that group or others may write "
                                  "(the dump makes it 0700)")
    dump_parser.add_argument("--ghost-limit", type=_size, default=1 << 20, metavar="SIZE",
                             help="keep the contents of deleted files up to SIZE bytes (K, M, G suffixes; "
                                  "default 1M); a larger one is refused")
    dump_parser.add_argument("--ext-unix-sk", action="store_true",
                             help="a unix socket connected to a named socket outside the tree is connected to "
                                  "that name again at restore (a stream: a new connection the server accepts)")
    tcp = dump_parser.add_mutually_exclusive_group()
    tcp.add_argument("--tcp-established", action="store_true",
                     help="keep established TCP connections (TCP repair; their packets are dropped until the "
                          "restore, docs/tcp.md)")
    tcp.add_argument("--tcp-close", action="store_true",
                     help="reset established TCP connections (and ones waiting to be accepted): the peer sees a "
                          "reset, the restored process a socket whose connection was reset")
    dump_parser.add_argument("-j", "--shell-job", action="store_true",
                             help="the tree's stdio terminal or pipes, and the root's session and group, "
                                  "belong to the caller's shell")
    dump_parser.add_argument("--external", type=_inherit_type("parse_external"), action="append", default=[],
                             metavar="pipe:[INODE]",
                             help="a pipe a process outside the tree holds too: its ends are saved without its "
                                  "bytes, and the restore takes them with --inherit-fd (repeatable)")
    _add_logging_options(dump_parser)
    dump_parser.set_defaults(run=_dump)

    restore_parser = commands.add_parser("restore", help="restore a process tree from an image directory",
                                         description="Restore the tree dumped in DIR with its original PIDs; wait "
                                                     "for its root and exit with its status unless -d is given.")
    restore_parser.add_argument("-D", "--images-dir", required=True, metavar="DIR", help="the image directory")
    restore_parser.add_argument("-d", "--restore-detached", action="store_true",
                                help="return once the tree runs instead of waiting for its root")
    restore_parser.add_argument("-j", "--shell-job", action="store_true",
                                help="reattach the tree's stdio to this caller's terminal or pipes")
    restore_parser.add_argument("--vdso", choices=VDSO_MODES, default=VDSO_MODES[0],
                                help="remap the running vDSO to the dumped place (needs the same vDSO), "
                                     "proxy the dumped one, or auto: remap when they match (docs/vdso.md)")
    restore_parser.add_argument("--inherit-fd", type=_inherit_type("parse_inherit_fd"), action="append", default=[],
                                metavar="fd[N]:pipe:[INODE]",
                                help="this caller's fd N is the end of the pipe dumped with --external pipe:[INODE] "
                                     "(repeatable: one for each end the tree held)")
    restore_parser.add_argument("--new-pid", action="store_true",
                                help="restore a copy in a PID namespace of its own: inside, every PID as dumped; "
                                     "outside, new ones (with -d, the root's is printed), so the original and "
                                     "other copies may run too")
    _add_logging_options(restore_parser)
    restore_parser.set_defaults(run=_restore)

    show_parser = commands.add_parser("show", help="print an image directory",
                                      description="Validate the image in DIR as restore does and print it.")
    show_parser.add_argument("directory", metavar="DIR", help="the image directory")
    show_parser.add_argument("--json", action="store_true", help="print everything as JSON, for programs")
    show_parser.set_defaults(run=_show)

    core_parser = commands.add_parser("core", help="write a process of an image as an ELF core file for gdb",
                                      description="Write process PID of the image in DIR (default: its root) as "
                                                  "an ELF core file gdb reads as if it had crashed at the dump.")
    core_parser.add_argument("-D", "--images-dir", required=True, metavar="DIR", help="the image directory")
    core_parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the core file to write")
    core_parser.add_argument("-p", "--pid", type=int, metavar="PID", help="which process of the tree")
    core_parser.set_defaults(run=_core)

    exe_parser = commands.add_parser("exe", help="write a process of an image as an executable that resumes it",
                                     description="Write process PID of the image in DIR (default: its root) as an "
                                                 "ELF executable: running it resumes the process under a new PID, "
                                                 "as any user, its stdio the shell's (docs/exe.md).")
    exe_parser.add_argument("-D", "--images-dir", required=True, metavar="DIR", help="the image directory")
    exe_parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the executable to write")
    exe_parser.add_argument("-p", "--pid", type=int, metavar="PID", help="which process of the tree")
    exe_parser.add_argument("--standalone", action="store_true",
                            help="embed the mapped files' contents (libraries, the program): FILE then runs where "
                                 "they are missing or different")
    exe_parser.set_defaults(run=_exe)

    check_parser = commands.add_parser("check", help="probe the kernel features dump and restore rely on",
                                       description="Probe every kernel feature the runtime relies on and print "
                                                   "one line each; exit 1 if one dump or restore needs is "
                                                   "missing (docs/check.md).")
    check_parser.add_argument("--json", action="store_true", help="print the results as JSON, for programs")
    check_parser.set_defaults(run=_check)

    for each in (parser, *commands.choices.values()):
        each.add_argument("--version", action=_Version, help="print the version and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "verbosity"):
        try:
            _setup_logging(args)
        except OSError as exc:
            return _usage_error(f"cannot open the log file: {exc}")
    try:
        args.run(args)
    except ReviveError as exc:
        # One line whatever the message carries: an image's text may hold newlines.
        print(f"revive: {shorten(str(exc), MESSAGE_SHOWN_MAX)}", file=sys.stderr)
        return 1
    return 0


def run() -> NoReturn:
    """The program (`python -m runtime`, the `revive` script): main, then an exit that skips the teardown.

    Why os._exit: freeing the interpreter's two hundred modules at exit takes tens of milliseconds, as
    long as a whole dump of a small process (issue 18), and nothing of the runtime needs it: the image
    files are closed by then (no buffered writes: FileIO, with-blocks), no atexit handler or non-daemon
    thread is the runtime's, the log is flushed by logging.shutdown and stdout and stderr here. An
    exception other than SystemExit still ends the usual way, with its traceback. The dataclasses the
    command makes compile through runtime/codecache.py, which keeps their code for the next run.
    """
    cache = codecache.install()
    try:
        status = main()
    except SystemExit as exc:
        status = exc.code
    cache.save()
    if status is None:
        status = 0
    elif not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            status = status or 120  # what the interpreter's own exit gives for a stream it cannot flush
    os._exit(status)
