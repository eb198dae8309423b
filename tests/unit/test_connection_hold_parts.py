"""Connection._hold_parts: a Fetch answer's file slices are held through duplicates of
their descriptors; when the process runs out of descriptors part way, none of the
duplicates already made is left open."""

from __future__ import annotations

import errno
import os

import pytest

from strom.log.segment import FileSlice
from strom.server import connection
from strom.server.connection import SENDFILE_MIN_BYTES, Connection


def test_descriptors_taken_before_a_failed_dup_are_closed(tmp_path, monkeypatch):
    path = tmp_path / "segment"
    path.write_bytes(b"r" * (2 * SENDFILE_MIN_BYTES))
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = [b"head", FileSlice(fd, 0, SENDFILE_MIN_BYTES),
                 FileSlice(fd, SENDFILE_MIN_BYTES, SENDFILE_MIN_BYTES)]
        made, closed = [], []
        real_dup, real_close = os.dup, os.close

        def dup(fd_):
            if made:  # the second duplicate: out of descriptors
                raise OSError(errno.EMFILE, "Too many open files")
            made.append(real_dup(fd_))
            return made[-1]

        def close(fd_):
            closed.append(fd_)
            real_close(fd_)
        monkeypatch.setattr(connection.os, "dup", dup)
        monkeypatch.setattr(connection.os, "close", close)
        with pytest.raises(OSError):
            Connection._hold_parts(parts)
        monkeypatch.undo()
        assert len(made) == 1 and closed == made
        with pytest.raises(OSError):  # the duplicate is really closed
            os.fstat(made[0])
        # without the failure: one duplicate per slice, -1 for bytes
        held, fds = Connection._hold_parts(parts)
        assert held[0] == b"head" and fds[0] == -1 and min(fds[1:]) >= 0
        connection._close_all(fds)
    finally:
        os.close(fd)
