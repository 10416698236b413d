"""The blobs' C sources define each macro once: a kernel constant lives in pie/include/uapi.h, not in each file that needs it."""

import re

from blobgen_support import REPO

DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)", re.MULTILINE)


def defines_by_name() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "pie").rglob("*")):
        if path.suffix in (".c", ".h", ".S"):
            for name in DEFINE.findall(path.read_text()):
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_no_macro_is_defined_twice_in_pie():
    found = defines_by_name()
    assert "PROT_READ" in found and "SIGKILL" in found  # the scan sees the kernel constants at all
    assert {name: files for name, files in found.items() if len(files) > 1} == {}


def test_kernel_constants_come_from_uapi_h():
    kernel = re.compile(r"(SIG|PROT_|MAP_|MREMAP_|MADV_|SA_|PR_|ARCH_|MSG_|SOCK_|AF_|SOL_|SCM_|UIO_|TASK_SIZE)\w*"
                        r"|E(PERM|NOENT|INTR|IO|BADF|AGAIN|NOMEM|FAULT|EXIST|INVAL|PIPE|NOSYS|PROTO|CANCELED)")
    elsewhere = {name: files for name, files in defines_by_name().items()
                 if kernel.fullmatch(name) and files != ["pie/include/uapi.h"]}
    assert elsewhere == {}
