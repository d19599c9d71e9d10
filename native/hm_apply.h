/* The receiver's apply core: performs one already-decoded replicated operation beneath a
 * directory, with directory and file descriptors kept open between messages.
 *
 * Plain C, no Python: the CPython glue (module.c), the libFuzzer target (fuzz/) and the
 * AddressSanitizer driver all call this. Python decides everything (order, session, journal,
 * acknowledgements); this only performs the file operation it is told to, and never outside the
 * directory, whatever the fields hold. See docs/native.md.
 */
#ifndef HM_APPLY_H
#define HM_APPLY_H

#include <stddef.h>
#include <stdint.h>

/* Opcodes of hamirror/link/protocol.py that this core applies (the others stay in Python). */
enum {
    HM_CREATE = 2,       /* ints: mode, uid, gid, rdev (regular files only here) */
    HM_MKDIR = 3,        /* ints: mode, uid, gid */
    HM_UNLINK = 6,
    HM_WRITE = 9,        /* ints: offset; data */
    HM_TRUNCATE = 10,    /* ints: length */
    HM_FALLOCATE = 11,   /* ints: mode, offset, length */
    HM_UTIMENS = 14,     /* times only */
    HM_FSYNC = 17,       /* ints: datasync */
    HM_WRITE_FSYNC = 25, /* ints: offset, datasync; data */
};

#define HM_MAX_TIMES 4
#define HM_PATH_MAX 4096
#define HM_NAME_MAX 255

struct hm_time {
    const char *path;     /* not NUL-terminated */
    size_t len;
    int64_t atime_ns, mtime_ns;
};

struct hm_op {
    int op;
    int n_ints;
    int64_t ints[4];
    const char *path;     /* not NUL-terminated */
    size_t path_len;
    int n_times;
    const struct hm_time *times;
    const void *data;     /* WRITE, WRITE_FSYNC */
    size_t data_len;
};

struct hm_applier;

/* A new applier on a duplicate of root_fd (the caller keeps its own); NULL with errno set. */
struct hm_applier *hm_new(int root_fd);
void hm_free(struct hm_applier *a);
/* Close every cached descriptor: names may have changed behind the core's back. */
void hm_forget(struct hm_applier *a);
/* Start the writeback that a small write to a synced file left for later: the receiver calls it
 * once the write's reply is sent, so the wait for that reply does not include it; hm_apply()
 * starts it first too (and hm_forget() drops it), so its descriptor is always still open. */
void hm_start_writeback(struct hm_applier *a);
/* 1 if a writeback waits for hm_start_writeback() (the caller skips that call otherwise). */
int hm_writeback_pending(const struct hm_applier *a);
/* 1 if this core applies op (with these ints), 0 if Python must. */
int hm_supported(int op, const int64_t *ints, int n_ints);
/* Apply one operation: 0, or an errno value with a message in err (always NUL-terminated). */
int hm_apply(struct hm_applier *a, const struct hm_op *op, char *err, size_t err_len);
/* Descriptors held open (tests). */
int hm_cached(const struct hm_applier *a);

#endif
