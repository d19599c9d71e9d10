/* When a write's pages start for the disk before anyone asks (sync_file_range, a hint only), and
 * its blocks are allocated before it (fallocate FALLOC_FL_KEEP_SIZE: hamirror/syscalls.py,
 * allocate_ahead): one threshold for both copies. The mount starts its copy's writeback after the
 * FUSE reply (hm_fuse_py.c), the receiver's core after its reply to the primary (hm_apply.c); the
 * same size at which hamirror/fs/operations.py sends a write to the peer before its own pwrite
 * (OVERLAP_MIN) and hamirror/link/apply.py starts the secondary's writeback (EARLY_WRITEBACK_MIN). */
#ifndef HM_WRITEBACK_H
#define HM_WRITEBACK_H

#define HM_EARLY_WRITEBACK_MIN (256 * 1024)

#endif
