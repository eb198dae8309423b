"""How much of a file the OS page cache holds, for tests of log.page.cache.window.bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile


def resident_bytes(path: str | os.PathLike) -> int:
    """Bytes of `path` in the page cache, by util-linux's fincore."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def dontneed_honoured(directory: str | os.PathLike) -> bool:
    """Whether files in `directory` leave the page cache on POSIX_FADV_DONTNEED (tmpfs,
    for one, keeps them), and fincore is there to tell."""
    if not shutil.which("fincore") or not hasattr(os, "posix_fadvise"):
        return False
    fd, path = tempfile.mkstemp(dir=directory, prefix=".fadvise-probe-")
    try:
        os.write(fd, os.urandom(4 << 20))
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return resident_bytes(path) < 1 << 20
    finally:
        os.close(fd)
        os.unlink(path)
