#!/usr/bin/env python3
"""Minimal mfusepy passthrough (path-based, multithreaded), for binding.py: SOURCE MOUNTPOINT [--writeback]."""

import os
import sys

import mfusepy

FUSE_CAP_WRITEBACK_CACHE = 1 << 16   # libfuse 3 fuse_common.h
_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_blksize")


class Passthrough(mfusepy.Operations):
    use_ns = True

    def __init__(self, root: str, writeback: bool) -> None:
        self.root = root
        self.writeback = writeback

    def init_with_config(self, conn, config):
        if self.writeback and conn is not None:   # not settable on libfuse 3.14's command line
            conn.want |= conn.capable & FUSE_CAP_WRITEBACK_CACHE

    def _p(self, path: str) -> str:
        return self.root + path

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(self._p(path))
        attrs = {k: getattr(st, k) for k in _FIELDS}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))

    def open(self, path, flags):
        own = flags & ~(os.O_CREAT | os.O_TRUNC | os.O_EXCL | os.O_APPEND)
        if own & os.O_ACCMODE != os.O_RDONLY:   # the writeback cache may read through it
            own = (own & ~os.O_ACCMODE) | os.O_RDWR
        return os.open(self._p(path), own)

    def create(self, path, mode, fi=None):
        return os.open(self._p(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        os.truncate(fh if fh is not None else self._p(path), length)
        return 0

    def fsync(self, path, datasync, fh):
        (os.fdatasync if datasync else os.fsync)(fh)
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    def unlink(self, path):
        os.unlink(self._p(path))
        return 0

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)
        return 0

    def rmdir(self, path):
        os.rmdir(self._p(path))
        return 0

    def utimens(self, path, times=None):
        os.utime(self._p(path), ns=times)
        return 0

    def statfs(self, path):
        sv = os.statvfs(self._p(path))
        return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                            "f_files", "f_ffree", "f_favail", "f_namemax")}


if __name__ == "__main__":
    source, mountpoint = [a for a in sys.argv[1:] if not a.startswith("--")]
    mfusepy.FUSE(Passthrough(os.path.abspath(source), "--writeback" in sys.argv), mountpoint, foreground=True,
                 nothreads=False, default_permissions=True, use_ino=True, fsname="pt-mfusepy")
