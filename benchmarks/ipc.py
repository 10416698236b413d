"""Dump and restore wall time of processes talking over pipes and unix sockets, with the data in flight.

Pipeline: three python3 processes, producer | filter | consumer, over two
pipes each enlarged to 1 MiB with F_SETPIPE_SZ (pipe-max-size here, which
needs no CAP_SYS_RESOURCE). The producer writes 1 MiB of random bytes into
the first, the filter moves half of it into the second, and nobody reads
any more: 1 MiB in flight, 512 KiB in each pipe, saved with tee and written
back at restore.

Server: one python3 server bound to a path and listening, and one client
process (its child) holding 100 connections to it, each accepted: 2
processes, 201 unix sockets (the listener, 100 accepted, 100 clients).
One client process rather than 100 keeps the per-process cost (which
benchmarks/trees.py measures) out of the socket figures.

Floors, in the same run: each tree again without its pipes or sockets (the
same interpreters, forked the same way), so the difference is what the
pipes and sockets cost; and a lone `sleep`, the smallest dump there is.
Each figure is the median of --repeat runs of the real command line, the
image in /dev/shm; every restored process is checked back under its parent.
This process is a child subreaper (see benchmarks/trees.py) and reaps by PID.

usage: python benchmarks/ipc.py [--repeat 3]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from measure import SHM, bench_sleep, runtime, wait_for_line
from runtime.kernel.clone import become_subreaper
from trees import PYTHON, READY_TIMEOUT_S, Started, describe, proc_stat

CLIENTS = 100
IN_FLIGHT = 1 << 20

# argv: pipes|bare. The filter and the consumer are the producer's children; the ready line names all three.
PIPELINE = """
import fcntl, os, sys, time
F_SETPIPE_SZ, SIZE = 1031, 1 << 20
with_pipes = sys.argv[1] == "pipes"
if with_pipes:
    first, second = os.pipe(), os.pipe()
    for _, write_end in (first, second):
        fcntl.fcntl(write_end, F_SETPIPE_SZ, SIZE)
    os.write(first[1], os.urandom(SIZE))
pids = [os.getpid()]
for role in ("filter", "consumer"):
    pid = os.fork()
    if pid == 0:
        if with_pipes and role == "filter":
            half = b""
            while len(half) < SIZE // 2:
                half += os.read(first[0], SIZE // 2 - len(half))
            os.write(second[1], half)
        os.write(1, f"{role} settled\\n".encode())
        while True:
            time.sleep(1000)
    pids.append(pid)
while open("out.log").read().count("settled") < 2:
    time.sleep(0.01)
os.write(1, ("ready pids=" + ",".join(map(str, pids)) + "\\n").encode())
while True:
    time.sleep(1000)
"""

# argv: sockets|bare, CLIENTS. The server accepts every connection of its one client process.
SERVER = """
import os, socket, sys, time
with_sockets, clients = sys.argv[1] == "sockets", int(sys.argv[2])
if with_sockets:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.path.abspath("server.sock"))
    server.listen(clients)
pid = os.fork()
if pid == 0:
    held = []
    if with_sockets:
        for _ in range(clients):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(os.path.abspath("server.sock"))
            held.append(client)
    os.write(1, b"connected\\n")
    while True:
        time.sleep(1000)
accepted = [server.accept()[0] for _ in range(clients)] if with_sockets else []
while "connected" not in open("out.log").read():
    time.sleep(0.01)
os.write(1, f"ready pids={os.getpid()},{pid}\\n".encode())
while True:
    time.sleep(1000)
"""



def cases(clients: int) -> dict[str, list[str]]:
    return {
        "pipeline": [PYTHON, "-c", PIPELINE, "pipes"],
        "pipeline, no pipes": [PYTHON, "-c", PIPELINE, "bare"],
        "server": [PYTHON, "-c", SERVER, "sockets", str(clients)],
        "server, no sockets": [PYTHON, "-c", SERVER, "bare", str(clients)],
    }


def check_restored(tree: Started, name: str) -> None:
    """Exit naming the first process of the tree not back under its original parent."""
    for pid in tree.pids:
        stat = proc_stat(pid)
        if stat is None or stat.state == "Z" or (pid != tree.root and stat.ppid != tree.root):
            raise SystemExit(f"{name}: pid {pid} is not restored: {describe(pid)}")


def bench_once(name: str, argv: list[str]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="revive-bench-ipc-", dir=SHM))
    images = work / "images"
    tree = None
    try:
        tree = Started(argv, work)
        ready = wait_for_line(tree.log, "ready", timeout=READY_TIMEOUT_S)
        tree.pids = [int(pid) for pid in ready.split("pids=", 1)[1].split(",")]
        dump_s, _ = runtime("dump", "-t", str(tree.root), "-D", str(images))
        tree.reap_dumped()
        image = sum(f.stat().st_size for f in images.rglob("*") if f.is_file())
        try:
            restore_s, _ = runtime("restore", "-D", str(images), "-d")
        except SystemExit as failed:  # the dump's figure still stands; the restore's reason is printed
            return {"dump": dump_s, "restore": " / ".join(str(failed).splitlines()), "image": image}
        check_restored(tree, name)
    finally:
        if tree is not None:
            tree.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"dump": dump_s, "restore": restore_s, "image": image}


def bench(name: str, argv: list[str], repeat: int) -> dict:
    """Median of each figure over repeat runs; a failed restore's reason in place of its figure."""
    runs = [bench_once(name, argv) for _ in range(repeat)]
    failed = next((run["restore"] for run in runs if isinstance(run["restore"], str)), None)
    return {key: failed if key == "restore" and failed else statistics.median(run[key] for run in runs)
            for key in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="the server's connections (1..500)")
    args = parser.parse_args()
    if args.repeat < 1 or not 1 <= args.clients <= 500:
        raise SystemExit("--repeat must be at least 1, --clients 1..500")
    become_subreaper()
    sleeps = [bench_sleep() for _ in range(args.repeat)]
    sleep = {"dump": statistics.median(d for d, _ in sleeps), "restore": statistics.median(r for _, r in sleeps)}
    results = {name: bench(name, argv, args.repeat) for name, argv in cases(args.clients).items()}
    print(f"median of {args.repeat} runs, wall clock of the whole command (python start-up included)")
    print(f"{'tree':<20} {'dump s':>7} {'restore s':>10} {'image MiB':>10} {'dump x sleep':>13} "
          f"{'restore x sleep':>16}")
    print(f"{'a lone sleep':<20} {sleep['dump']:>7.3f} {sleep['restore']:>10.3f} {'-':>10} {1:>13.2f} {1:>16.2f}")
    for name, r in results.items():
        if isinstance(r["restore"], str):
            print(f"{name:<20} {r['dump']:>7.3f} {'failed':>10} {r['image'] / 2**20:>10.2f} "
                  f"{r['dump'] / sleep['dump']:>13.2f} {'-':>16}   restore: {r['restore']}")
            continue
        print(f"{name:<20} {r['dump']:>7.3f} {r['restore']:>10.3f} {r['image'] / 2**20:>10.2f} "
              f"{r['dump'] / sleep['dump']:>13.2f} {r['restore'] / sleep['restore']:>16.2f}")
    for name, floor, what in (("pipeline", "pipeline, no pipes", f"2 pipes, {IN_FLIGHT >> 20} MiB in flight"),
                              ("server", "server, no sockets", f"a listener and {args.clients} accepted connections")):
        full, bare = results[name], results[floor]
        restored = not isinstance(full["restore"], str) and not isinstance(bare["restore"], str)
        restore = f"{(full['restore'] - bare['restore']) * 1000:+.0f} ms" if restored else "failed"
        print(f"{what}: dump {(full['dump'] - bare['dump']) * 1000:+.0f} ms, restore {restore} over the same "
              "processes without them")
    print("every restored process of a tree with figures was seen back under its parent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
