/* When a write's pages start for the disk before anyone asks (sync_file_range, a hint only), and
 * when they leave the page cache: one rule for both copies. The mount applies it to its copy after
 * the FUSE reply (hm_fuse_py.c), the receiver's core to the secondary's after its reply to the
 * primary (hm_apply.c); hamirror/link/apply.py does the same for the Python applier
 * (EARLY_WRITEBACK_MIN, DROP_BEHIND), and hamirror/fs/operations.py sends a write of this size to
 * the peer before its own pwrite (OVERLAP_MIN). */
#ifndef HM_WRITEBACK_H
#define HM_WRITEBACK_H

#include <fcntl.h>

#define HM_EARLY_WRITEBACK_MIN (256 * 1024)

/* Why pages are dropped at all: neither copy under the mount is read while the stream is written
 * (the application reads the kernel's pages of the FUSE file, the secondary's copy is read by
 * nobody), so keeping them only doubles the page cache and makes every new page a fresh
 * allocation, which cost this VM 1.0-1.4 ms of CPU per MiB against 0.3 with the pages recycled
 * (docs/performance.md, "Pages dropped behind a stream"). 64 MiB behind the write, so a file
 * smaller than that keeps its pages, and a stream's pages have had time to reach the disk: the
 * kernel drops only clean pages (a dirty or in-flight one stays, nothing is lost). */
#define HM_DROP_BEHIND (64LL * 1024 * 1024)

/* Start the writeback of [off, off + len) and drop the clean cached pages from 2 x HM_DROP_BEHIND
 * to HM_DROP_BEHIND before its end. The window, not just the range HM_DROP_BEHIND back, because a
 * page still on its way to the disk is kept (the kernel skips it): the calls that follow give it
 * another chance. Hints only: no error is taken (the fsync writes, waits and reports). */
static inline void hm_write_behind(int fd, off_t off, off_t len)
{
    (void)sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE);
    off_t end = off + len - HM_DROP_BEHIND;
    if (end > 0) {
        off_t from = end > HM_DROP_BEHIND ? end - HM_DROP_BEHIND : 0;
        (void)posix_fadvise(fd, from, end - from, POSIX_FADV_DONTNEED);
    }
}

#endif
