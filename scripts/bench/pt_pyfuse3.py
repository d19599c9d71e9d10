#!/usr/bin/env python3
"""Minimal pyfuse3 passthrough (inode-based, trio), for binding.py: SOURCE MOUNTPOINT [--writeback]."""

import errno
import os
import sys

import pyfuse3
import trio
from pyfuse3 import FUSEError


def _call(fn, *args):
    try:
        return fn(*args)
    except OSError as exc:
        raise FUSEError(exc.errno or errno.EIO) from None


class Passthrough(pyfuse3.Operations):
    def __init__(self, root: str, writeback: bool) -> None:
        super().__init__()
        self.enable_writeback_cache = writeback
        self.paths = {pyfuse3.ROOT_INODE: root}
        self.root_ino = os.lstat(root).st_ino

    def _entry(self, st, path=None):
        ino = pyfuse3.ROOT_INODE if st.st_ino == self.root_ino else st.st_ino
        if path is not None:
            self.paths[ino] = path
        e = pyfuse3.EntryAttributes()
        for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize", "st_blocks",
                  "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
            setattr(e, k, getattr(st, k))
        e.st_ino, e.generation, e.entry_timeout, e.attr_timeout = ino, 0, 1, 1
        return e

    def _child(self, parent, name):
        return os.path.join(self.paths[parent], os.fsdecode(name))

    async def lookup(self, parent, name, ctx=None):
        path = self._child(parent, name)
        return self._entry(_call(os.lstat, path), path)

    async def getattr(self, inode, ctx=None):
        return self._entry(_call(os.lstat, self.paths[inode]))

    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self.paths[inode]
        try:
            if fields.update_size:
                os.truncate(fh if fh is not None else path, attr.st_size)
            if fields.update_mode:
                os.chmod(path, attr.st_mode & 0o7777)
            if fields.update_atime or fields.update_mtime:
                st = os.fstat(fh) if fh is not None else os.lstat(path)
                os.utime(fh if fh is not None else path,
                         ns=(attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                             attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns))
            return self._entry(os.fstat(fh) if fh is not None else os.lstat(path))
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        names = sorted(os.listdir(self.paths[fh]))
        for i, name in enumerate(names[start_id:], start_id):
            path = os.path.join(self.paths[fh], name)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(os.lstat(path), path), i + 1):
                return

    async def releasedir(self, fh):
        pass

    async def mkdir(self, parent, name, mode, ctx):
        path = self._child(parent, name)
        _call(os.mkdir, path, mode)
        return self._entry(os.lstat(path), path)

    async def unlink(self, parent, name, ctx):
        _call(os.unlink, self._child(parent, name))

    async def rmdir(self, parent, name, ctx):
        _call(os.rmdir, self._child(parent, name))

    async def forget(self, inode_list):
        pass

    async def open(self, inode, flags, ctx):
        own = flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND)
        own = (own & ~os.O_ACCMODE) | os.O_RDWR if own & os.O_ACCMODE != os.O_RDONLY else own
        return pyfuse3.FileInfo(fh=_call(os.open, self.paths[inode], own))

    async def create(self, parent, name, mode, flags, ctx):
        path = self._child(parent, name)
        fd = _call(os.open, path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
        return pyfuse3.FileInfo(fh=fd), self._entry(os.fstat(fd), path)

    async def read(self, fh, off, size):
        return os.pread(fh, size, off)

    async def write(self, fh, off, buf):
        return _call(os.pwrite, fh, buf, off)

    async def fsync(self, fh, datasync):
        _call(os.fdatasync if datasync else os.fsync, fh)

    async def flush(self, fh):
        pass

    async def release(self, fh):
        os.close(fh)

    async def statfs(self, ctx):
        sv, out = os.statvfs(self.paths[pyfuse3.ROOT_INODE]), pyfuse3.StatvfsData()
        for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail",
                  "f_namemax"):
            setattr(out, k, getattr(sv, k))
        return out


if __name__ == "__main__":
    source, mountpoint = [a for a in sys.argv[1:] if not a.startswith("--")]
    ops = Passthrough(os.path.abspath(source), "--writeback" in sys.argv)
    pyfuse3.init(ops, mountpoint, set(pyfuse3.default_options) | {"fsname=pt-pyfuse3"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
