"""What a TCP server's clients see of a dump and restore, and what its connections cost.

Pause: a small echo server (python3, selectors) with one client outside the
tree (this process) asking every 10 ms on one connection; dumped with
--tcp-established and restored at once with the real command line. The
pause is the time from the client's last reply before the dump started to
its first reply after the restore ended (the client goes on asking through
both: its requests in the window are dropped by the network lock and sent
again by its retransmission timer).

Connections: the same server holding 0, 100 and 1,000 established
connections from this process, each answering after the restore (checked):
dump and restore wall time of the real command line, the image in /dev/shm,
the median of --repeat runs. The 0 row is the floor (the same interpreter
without connections).

This process is a child subreaper (the restored server is re-parented to
it when `restore -d` exits) and reaps by PID.

usage: python benchmarks/tcp.py [--repeat 3]
"""

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from measure import SHM, runtime, wait_for_line
from runtime.kernel.clone import become_subreaper

PYTHON = "/usr/bin/python3"
SERVER = """
import os, selectors, socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(1024)
os.write(1, f"ready port={server.getsockname()[1]}\\n".encode())
sel = selectors.DefaultSelector()
sel.register(server, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is server:
            conn, _ = server.accept()
            sel.register(conn, selectors.EVENT_READ)
            continue
        data = key.fileobj.recv(65536)
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
        else:
            key.fileobj.sendall(data)
"""


def start_server(work: Path) -> tuple[int, int]:
    """The server's (pid, port)."""
    out = work / "out.log"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([PYTHON, "-c", SERVER], stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    port = int(wait_for_line(out, "ready").split("port=")[1])
    return proc.pid, port


def ask(conn: socket.socket) -> None:
    conn.sendall(b"x")
    if conn.recv(1) != b"x":
        raise SystemExit("a connection did not answer")


def dump_restore(pid: int, images: Path) -> tuple[float, float]:
    dump_s, _ = runtime("dump", "-t", str(pid), "-D", str(images), "--tcp-established")
    os.waitpid(pid, 0)  # our child: killed by the dump
    restore_s, _ = runtime("restore", "-D", str(images), "-d")
    return dump_s, restore_s


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def bench_pause() -> float:
    work = Path(tempfile.mkdtemp(prefix="revive-bench-", dir=SHM))
    pid, port = start_server(work)
    replies: list[float] = []
    done = threading.Event()

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.settimeout(60)
            while not done.is_set():
                ask(conn)
                replies.append(time.monotonic())
                time.sleep(0.01)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        while len(replies) < 10:
            time.sleep(0.01)
        started = time.monotonic()
        dump_restore(pid, work / "images")
        ended = time.monotonic()
        while not [t for t in replies if t > ended]:
            time.sleep(0.001)
    finally:
        done.set()
        thread.join()
        stop(pid)
        shutil.rmtree(work)
    before = max(t for t in replies if t < started)
    after = min(t for t in replies if t > ended)
    return after - before


def bench_connections(count: int, repeat: int) -> tuple[float, float]:
    dumps, restores = [], []
    for _ in range(repeat):
        work = Path(tempfile.mkdtemp(prefix="revive-bench-", dir=SHM))
        pid, port = start_server(work)
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        try:
            for conn in conns:
                ask(conn)
            dump_s, restore_s = dump_restore(pid, work / "images")
            for conn in conns:
                conn.settimeout(30)
                ask(conn)
            dumps.append(dump_s)
            restores.append(restore_s)
        finally:
            for conn in conns:
                conn.close()
            stop(pid)
            shutil.rmtree(work)
    return statistics.median(dumps), statistics.median(restores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    become_subreaper()
    pauses = [bench_pause() for _ in range(args.repeat)]
    print(f"pause a connected client sees: median {statistics.median(pauses) * 1000:.0f} ms "
          f"(runs: {', '.join(f'{p * 1000:.0f}' for p in pauses)} ms)")
    for count in (0, 100, 1000):
        dump_s, restore_s = bench_connections(count, args.repeat)
        print(f"server with {count:4d} established connections: dump {dump_s:.2f} s, restore {restore_s:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
