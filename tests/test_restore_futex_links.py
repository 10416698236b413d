"""clear_child_tid and the robust futex list, which live in the kernel's task, are set again by a restore."""

import pytest

from dump_support import target_path
from restore_support import Restorable
from runtime.infect.session import infect
from runtime.task.futex_links import read_robust_list


@pytest.fixture
def restorable(tmp_path):
    target = Restorable([str(target_path("restore_state"))], tmp_path)
    yield target
    target.stop()


def futex_links(pid: int) -> tuple[int, tuple[int, int]]:
    with infect(pid) as parasite:
        clear_child_tid = parasite.dump_thread().clear_child_tid
    return clear_child_tid, read_robust_list(pid)


def test_restore_registers_clear_child_tid_and_the_robust_list_again(restorable):
    before = futex_links(restorable.pid)
    clear_child_tid, (robust_head, robust_len) = before
    assert clear_child_tid and robust_head and robust_len  # glibc registers both for every thread
    restorable.dump()
    restorable.restore()
    assert futex_links(restorable.pid) == before
