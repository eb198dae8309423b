"""Replacing segments with a cleaned one, and finishing or undoing that after a crash.

The steps of a swap (the owner of the log runs 2-4 in one go, see
`PartitionLog.replace_segments`; the cleaner thread runs 1)::

    1. <b>.log.cleaned  <b>.index.cleaned  <b>.timeindex.cleaned   written and fsynced
       (and <b>.txnindex.cleaned when the cleaned segment keeps aborted transactions)
    2. .cleaned -> .swap      the indexes first, the log file last
    3. old segments' files -> .deleted   (their open descriptors stay valid for reads)
    4. .swap -> final name    the indexes first, the log file last

Recovery (`recover_swaps`, run before a log's segments are loaded), as Kafka's LogLoader:

- `.cleaned` files are deleted: a swap that had not reached step 2 is undone. A `.swap` whose
  base offset is at or above the smallest `.cleaned` base offset is deleted too (it cannot
  be complete).
- Each `<b>.log.swap` left is completed: the segment files whose base offset is in
  [b, next offset of the swap) are deleted (the old segments it replaces), the `.swap`
  index files (if still there) take the index names, and the log file takes its name.
  Whatever index is then missing or bad is rebuilt by the normal load.
- Index `.swap` files without a `.log.swap` are deleted; `.deleted` files are deleted by the
  normal load.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from strom.log import files
from strom.protocol.batch import HEADER_SIZE, InvalidBatch, read_header

log = logging.getLogger(__name__)

SEGMENT_SUFFIXES = (files.LOG_SUFFIX, files.INDEX_SUFFIX, files.TIME_INDEX_SUFFIX,
                    files.TXN_INDEX_SUFFIX)
# the order of renames in steps 2 and 4: the log file last, so a `.log.swap` exists only
# once its indexes are in place
RENAME_ORDER = (files.TXN_INDEX_SUFFIX, files.INDEX_SUFFIX, files.TIME_INDEX_SUFFIX,
                files.LOG_SUFFIX)
# a cleaned segment has a .txnindex only when it keeps aborted transactions
OPTIONAL_SUFFIXES = (files.TXN_INDEX_SUFFIX,)

# A test hook: called with the name of each step as it is done ("swap.index", "deleted.0"
# (the first old segment renamed), "final.log", ...), so a test can crash the swap at any point.
StepHook = Callable[[str], None]


def no_step(_name: str) -> None:
    pass


def rename_cleaned_to_swap(dir_: str, base: int, step: StepHook = no_step) -> None:
    for suffix in RENAME_ORDER:
        path = files.segment_path(dir_, base, suffix)
        if suffix in OPTIONAL_SUFFIXES and not os.path.exists(path + files.CLEANED_SUFFIX):
            continue
        os.replace(path + files.CLEANED_SUFFIX, path + files.SWAP_SUFFIX)
        step("swap" + suffix)


def rename_swap_to_final(dir_: str, base: int, step: StepHook = no_step) -> None:
    for suffix in RENAME_ORDER:
        path = files.segment_path(dir_, base, suffix)
        if suffix in OPTIONAL_SUFFIXES and not os.path.exists(path + files.SWAP_SUFFIX):
            continue
        os.replace(path + files.SWAP_SUFFIX, path)
        step("final" + suffix)


def _next_offset(path: str) -> int | None:
    """The offset after the last whole batch of a log file (None if it has none)."""
    next_offset = None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        position = 0
        while position + HEADER_SIZE <= size:
            f.seek(position)
            try:
                header = read_header(f.read(HEADER_SIZE))
            except InvalidBatch:
                break
            if position + header.size > size:
                break
            next_offset = header.last_offset + 1
            position += header.size
    return next_offset


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _has_offset(name: str) -> bool:
    try:
        files.offset_from_filename(name)
    except ValueError:
        return False  # not a segment file (left for the normal load to judge)
    return True


def recover_swaps(dir_: str) -> None:
    """Finish or undo interrupted swaps in one partition directory (see the module doc)."""
    names = [n for n in os.listdir(dir_) if _has_offset(n)]
    cleaned = [n for n in names if n.endswith(files.CLEANED_SUFFIX)]
    swaps = [n for n in names if n.endswith(files.SWAP_SUFFIX)]
    if not cleaned and not swaps:
        return
    min_cleaned = min((files.offset_from_filename(n) for n in cleaned), default=None)
    for name in cleaned:
        log.info("Deleting %s: an unfinished clean", os.path.join(dir_, name))
        _unlink(os.path.join(dir_, name))
    log_swaps: list[int] = []
    for name in swaps:
        base = files.offset_from_filename(name)
        if name == files.filename_prefix(base) + files.LOG_SUFFIX + files.SWAP_SUFFIX and \
                (min_cleaned is None or base < min_cleaned):
            log_swaps.append(base)
    for name in swaps:  # index swaps of an incomplete swap, and incomplete log swaps
        base = files.offset_from_filename(name)
        if base not in log_swaps:
            log.info("Deleting %s: an unfinished swap", os.path.join(dir_, name))
            _unlink(os.path.join(dir_, name))
    for base in sorted(log_swaps):
        swap_log = files.segment_path(dir_, base, files.LOG_SUFFIX) + files.SWAP_SUFFIX
        next_offset = _next_offset(swap_log)
        end = next_offset if next_offset is not None else base + 1
        for name in os.listdir(dir_):
            if not name.endswith(SEGMENT_SUFFIXES):
                continue
            try:
                other = files.offset_from_filename(name)
            except ValueError:
                continue
            if other == base and name.endswith(files.LOG_SUFFIX):
                continue  # replaced by the rename below
            if base < other < end or (other == base and not name.endswith(files.LOG_SUFFIX)
                                      and os.path.exists(os.path.join(
                                          dir_, name + files.SWAP_SUFFIX))):
                log.info("Deleting %s: replaced by the swap at %d", name, base)
                _unlink(os.path.join(dir_, name))
        for suffix in RENAME_ORDER:
            path = files.segment_path(dir_, base, suffix)
            if os.path.exists(path + files.SWAP_SUFFIX):
                os.replace(path + files.SWAP_SUFFIX, path)
        log.info("Completed the interrupted swap of the segment at offset %d in %s",
                 base, dir_)
