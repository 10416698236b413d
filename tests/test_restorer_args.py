"""The restorer's argument block as build_area lays it out for a real dumped process: task part, thread part, every array inside the area."""

import ctypes
import signal
import struct

from dump_support import start_target, target_path
from runtime.dump import DumpOptions, dump
from runtime.images.loader import load
from runtime.images.model import PAGE_SIZE
from runtime.infect import blobs
from runtime.mm.vdso import VdsoMode, read_running_vdso
from runtime.restore import plan_vdso
from runtime.restore.restorer_args import Arena, build_area, fd_base, own_layout, plan_fds


def read(area, ctype, address, count=1):
    """count ctype values at address, copied out of the area's bytes (as the restorer will see them)."""
    offset = address - area.base
    assert area.base <= address and offset + ctypes.sizeof(ctype) * count <= area.size, f"{address:#x} outside the area"
    return (ctype * count).from_buffer_copy(area.image, offset)


def test_build_area_puts_the_task_part_and_one_thread_part_in_the_area(tmp_path):
    target = start_target([str(target_path("dump_state")), str(tmp_path / "state-file")], tmp_path)
    try:
        dump(target.pid, tmp_path / "img", DumpOptions(leave_running=True))
    finally:
        target.stop()
    proto = blobs.protocol()
    with load(tmp_path / "img") as checkpoint:
        image = checkpoint.root
        process = image.process
        vdso = plan_vdso(process, image.vdso_image, VdsoMode.AUTO, read_running_vdso())
        area = build_area(process, image.xstates, plan_fds(process, fd_base([process], [])), vdso, own_layout())
    thread = process.threads[0]
    (args,) = read(area, proto.RestorerArgs, area.args)
    assert (args.mode, args.pid, args.nr_threads) == (proto.RESTORER_MODE_RESTORE, process.pid, 1)

    (slot,) = read(area, proto.RestorerThread, args.threads)
    assert (slot.tid, slot.fs_base, slot.gs_base) == (thread.tid, thread.regs.fs_base, thread.regs.gs_base)
    assert (slot.ss_sp, slot.ss_size, slot.ss_flags) == (thread.altstack.sp, thread.altstack.size, thread.altstack.flags)
    assert (slot.rseq_addr, slot.rseq_len, slot.rseq_sig) == (thread.rseq.address, thread.rseq.size,
                                                               thread.rseq.signature)
    assert area.base < slot.sigreturn_sp < area.base + area.size

    # dump_state leaves SIGUSR2 pending on its thread and SIGRTMIN+2 on the process: each goes to its own part.
    private = read(area, proto.RestorerSiginfo, slot.pending, slot.nr_pending)
    shared = read(area, proto.RestorerSiginfo, args.pending, args.nr_pending)
    assert [p.signo for p in private] == [signal.SIGUSR2]
    assert [p.signo for p in shared] == [struct.unpack_from("<i", info)[0] for info in process.shared_pending] != []
    assert bytes(shared[0].info) == process.shared_pending[0]

    # Every part lies after the blob and the block, 64-byte aligned, none overlapping another.
    parts = [(args.keep, ctypes.sizeof(proto.RestorerRange) * args.nr_keep),
             (args.vmas, ctypes.sizeof(proto.RestorerVma) * args.nr_vmas),
             (args.iovs, ctypes.sizeof(proto.KIovec) * args.nr_iovs),
             (args.mm.auxv, args.mm.auxv_size),
             (args.close_fds, 4 * args.nr_close_fds),
             (args.pending, ctypes.sizeof(proto.RestorerSiginfo) * args.nr_pending),
             (args.threads, ctypes.sizeof(proto.RestorerThread)),
             (slot.pending, ctypes.sizeof(proto.RestorerSiginfo) * slot.nr_pending)]
    block_end = area.args + ctypes.sizeof(proto.RestorerArgs)
    assert all(address % Arena.ALIGNMENT == 0 and address >= block_end for address, _ in parts)
    ordered = sorted(parts)
    assert all(a + size <= b for (a, size), (b, _) in zip(ordered, ordered[1:]))
    assert ordered[-1][0] + ordered[-1][1] <= area.base + area.size
    assert list(read(area, ctypes.c_int32, args.close_fds, args.nr_close_fds)) == list(plan_fds(process, fd_base([process], [])).all)
    assert area.size % PAGE_SIZE == 0
