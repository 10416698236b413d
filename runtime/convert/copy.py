"""Bytes of one file copied into another inside the kernel, for both converters (core and exe files).

Why in the kernel: an image's pages run to gigabytes; copy_file_range (or
sendfile across file systems) never brings them into Python objects.
"""

import errno
import os

COPY_CHUNK = 1 << 30  # copy_file_range moves at most about 2 GiB a call


def copy_range(source: int, source_offset: int, fd: int, offset: int, length: int) -> None:
    """length bytes of source at source_offset to fd at offset, in the kernel: copy_file_range within one file
    system, sendfile from another (copy_file_range refuses with EXDEV); a source that ends early leaves zeros."""
    while length > 0:
        try:
            moved = os.copy_file_range(source, fd, min(length, COPY_CHUNK), source_offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            os.lseek(fd, offset, os.SEEK_SET)
            moved = os.sendfile(fd, source, source_offset, min(length, COPY_CHUNK))
        if moved == 0:
            return
        source_offset, offset, length = source_offset + moved, offset + moved, length - moved
