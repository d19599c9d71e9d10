"""Which pages of a file sit in the page cache with data not yet on the disk (for ``lab kill --power-loss``).

A real power loss takes what the page cache held and the disk did not: the *dirty* pages (and
those under writeback, which may not have landed). The kernel says which pages those are, to root:
``mincore`` tells which pages of a mapping are resident; mapping the file read-only and reading
one byte of a resident page maps it without any I/O; ``/proc/self/pagemap`` then gives its page
frame number, and ``/proc/kpageflags`` that frame's flags (``KPF_DIRTY``, ``KPF_WRITEBACK``).
Pages that are not resident are on the disk already (a dirty page cannot be evicted).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

PAGE = os.sysconf("SC_PAGE_SIZE")
KPF_DIRTY = 1 << 4
KPF_WRITEBACK = 1 << 8
PM_PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1
WINDOW = 256 * 1024 * 1024            # bytes of a file mapped at once
PAGEMAP = "/proc/self/pagemap"
KPAGEFLAGS = "/proc/kpageflags"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def unsupported() -> str:
    """Why dirty pages cannot be found here ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root (/proc/kpageflags and page frame numbers are root-only)"
    for path in (PAGEMAP, KPAGEFLAGS):
        if not os.access(path, os.R_OK):
            return f"{path} is not readable on this kernel"
    return ""


def dirty_pages(fd: int) -> list[int]:
    """Indices of the pages of the regular file ``fd`` whose data may not be on the disk yet."""
    size = os.fstat(fd).st_size
    found: list[int] = []
    with open(PAGEMAP, "rb", buffering=0) as pagemap, open(KPAGEFLAGS, "rb", buffering=0) as kflags:
        for start in range(0, size, WINDOW):
            length = min(WINDOW, size - start)
            found += [start // PAGE + i for i in _dirty_in_window(fd, start, length, pagemap, kflags)]
    return found


def _dirty_in_window(fd: int, offset: int, length: int, pagemap, kflags) -> list[int]:
    count = (length + PAGE - 1) // PAGE
    addr = _libc.mmap(None, count * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if addr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    try:
        vec = ctypes.create_string_buffer(count)
        if _libc.mincore(addr, count * PAGE, vec) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mincore: {os.strerror(err)}")
        resident = [i for i, b in enumerate(vec.raw) if b & 1]
        for i in resident:
            ctypes.string_at(addr + i * PAGE, 1)   # a read fault maps the cached page, no I/O
        entries = os.pread(pagemap.fileno(), count * 8, (addr // PAGE) * 8)
        dirty = []
        for i in resident:
            entry = struct.unpack_from("<Q", entries, i * 8)[0]
            if not entry & PM_PRESENT:
                continue
            raw = os.pread(kflags.fileno(), 8, (entry & PFN_MASK) * 8)
            if len(raw) == 8 and struct.unpack("<Q", raw)[0] & (KPF_DIRTY | KPF_WRITEBACK):
                dirty.append(i)
        return dirty
    finally:
        _libc.munmap(addr, count * PAGE)
