"""The one owner of the compiler and linker flags for freestanding blobs.

SConstruct and the tests that compile blob-like code import these lists, so a
flag changes in one place (as `compel cflags` is the one source for CRIU).
"""

# Why each flag: -fpie for position-independent code; no libc, no builtins
# the compiler could turn into libc calls; no stack protector (no TLS canary
# in a foreign process); no CET endbr/shadow-stack notes; no red zone because
# the parasite's stack is entered from a trap and signal frames may be built
# under it; hidden visibility so nothing is preemptible and the compiler
# emits direct PC-relative references; no unwind tables (discarded anyway).
CFLAGS = [
    "-O2",
    "-g",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
    "-fpie",
    "-nostdlib",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-tree-loop-distribute-patterns",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-mno-red-zone",
    "-fvisibility=hidden",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-jump-tables",
    "-fno-common",
    "-ffunction-sections",
    "-fdata-sections",
    "-ffile-prefix-map=.=.",
]

ASFLAGS = ["-fpie", "-nostdlib", "-ffreestanding", "-fcf-protection=none"]

# Partial link of one blob's objects into NAME.built-in.o.
LD_RELOCATABLE = ["-r", "--build-id=none"]

# Layout of NAME.built-in.o with the linker script; still relocatable so
# blobgen sees every relocation and decides which ones it can resolve.
LD_LAYOUT = ["-r", "--build-id=none", "-z", "noexecstack"]
