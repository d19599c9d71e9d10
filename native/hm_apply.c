/* The receiver's apply core (see hm_apply.h and docs/native.md).
 *
 * Why it exists: the Python applier resolves a message's parent directory one component at a
 * time and reopens the file through /proc/self/fd for every message that misses its small cache
 * (~21 syscalls for one small file). Here a parent directory is opened once, beneath the root in
 * one openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), and kept; the
 * descriptor a CREATE makes is kept for the WRITEs that follow.
 *
 * Safety, whatever the fields hold: every path is checked again (relative, no "", "." or ".."
 * component, bounded), directories are only reached beneath the root without crossing a
 * symlink, the last component is always acted on with a no-follow call, and a file is opened
 * for its data only once an O_PATH descriptor showed it is a regular file (a FIFO would block,
 * a device node would reach outside the directory). The caches and the path rules are in
 * hm_resolve.c, the operations here.
 */
#define _GNU_SOURCE
#include "hm_core.h"
#include "hm_writeback.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define INT64_MAX_ (INT64_C(0x7fffffffffffffff))
#define MAX_DATA (16 * 1024 * 1024)
#define FALLOC_MODES 0x7F
#define ID_LIMIT INT64_C(0xfffffffe) /* ids are < 2**32 - 1, as protocol.py checks */

/* The cached write descriptor of a regular file, opened on a miss. */
static int writable(struct hm_applier *a, const struct hm_op *op, int *fd, char *err,
                    size_t err_len)
{
    struct entry *e = cache_find(a, &a->files, op->path, op->path_len);
    if (e != NULL) {
        *fd = e->fd;
        return 0;
    }
    struct where w;
    int rc = resolve(a, op->path, op->path_len, &w, err, err_len);
    if (rc == 0)
        rc = open_data(w.dir_fd, w.name, O_WRONLY, 0, err, err_len, fd);
    if (rc == 0 && cache_put(a, &a->files, op->path, op->path_len, *fd) == NULL)
        rc = fail_errno(err, err_len, ENOMEM); /* the descriptor is closed: not usable */
    return rc;
}

/* Whether path's cached descriptor was last synced by an FSYNC (its writes then start writeback
 * at once: note_sync). */
static int was_synced(struct hm_applier *a, const struct hm_op *op)
{
    struct entry *e = cache_find(a, &a->files, op->path, op->path_len);
    return e != NULL && e->synced;
}

/* A sync through path's cached descriptor succeeded: by an FSYNC of its own (``separate``: the
 * small writes that follow start their writeback at once, and the next FSYNC finds them on their
 * way), or by a commit message (the file's commits arrive whole as WRITE_FSYNC: a small write
 * before one, SQLite's frame header, would be written twice, its page again by the commit's sync
 * after waiting for the first I/O). */
static void note_sync(struct hm_applier *a, const struct hm_op *op, int separate)
{
    struct entry *e = cache_find(a, &a->files, op->path, op->path_len);
    if (e != NULL)
        e->synced = separate;
}

/* operations ------------------------------------------------------------------------------- */

static int is_root(const struct hm_op *op)
{
    return op->path_len == 1 && op->path[0] == '.';
}

static int do_create(struct hm_applier *a, const struct hm_op *op, char *err, size_t err_len)
{
    int64_t mode = op->ints[0], uid = op->ints[1], gid = op->ints[2];
    if (!S_ISREG(mode) || mode > 0177777 || uid < 0 || uid >= ID_LIMIT || gid < 0 || gid >= ID_LIMIT)
        return fail(err, err_len, EINVAL, "CREATE: mode or id out of range");
    /* A new inode under this name: a descriptor kept for the name must not take its writes. */
    cache_forget(&a->files, op->path, op->path_len, 0);
    struct where w;
    int rc = resolve(a, op->path, op->path_len, &w, err, err_len);
    if (rc != 0)
        return rc;
    int fd = openat(w.dir_fd, w.name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) /* e.g. a resumed resync: truncate it, if it is a file */
        rc = open_data(w.dir_fd, w.name, O_WRONLY | O_TRUNC, 0, err, err_len, &fd);
    else if (fd < 0)
        rc = fail_errno(err, err_len, errno);
    if (rc != 0)
        return rc;
    if (fchown(fd, (uid_t)uid, (gid_t)gid) != 0 || fchmod(fd, (mode_t)(mode & 07777)) != 0) {
        rc = fail_errno(err, err_len, errno);
        close(fd);
        return rc;
    }
    cache_put(a, &a->files, op->path, op->path_len, fd); /* for the WRITEs that follow */
    return 0;
}

static int do_mkdir(struct hm_applier *a, const struct hm_op *op, char *err, size_t err_len)
{
    int64_t mode = op->ints[0], uid = op->ints[1], gid = op->ints[2];
    if (mode < 0 || mode > 0177777 || uid < 0 || uid >= ID_LIMIT || gid < 0 || gid >= ID_LIMIT)
        return fail(err, err_len, EINVAL, "MKDIR: mode or id out of range");
    struct where w;
    int rc = resolve(a, op->path, op->path_len, &w, err, err_len);
    if (rc != 0)
        return rc;
    if (mkdirat(w.dir_fd, w.name, 0700) != 0)
        return fail_errno(err, err_len, errno);
    /* Owner-only until chown, then the exact mode (chown would clear setgid set before it). */
    int fd = openat(w.dir_fd, w.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return resolve_error(err, err_len, errno);
    if (fchown(fd, (uid_t)uid, (gid_t)gid) != 0 || fchmod(fd, (mode_t)(mode & 07777)) != 0) {
        rc = fail_errno(err, err_len, errno);
        close(fd);
        return rc;
    }
    /* Whatever was kept under this name (a tree removed behind our back) is gone. */
    cache_forget(&a->dirs, op->path, op->path_len, 1);
    cache_forget(&a->files, op->path, op->path_len, 1);
    cache_put(a, &a->dirs, op->path, op->path_len, fd); /* the files that follow go in it */
    return 0;
}

static int do_unlink(struct hm_applier *a, const struct hm_op *op, char *err, size_t err_len)
{
    cache_forget(&a->files, op->path, op->path_len, 0);
    struct where w;
    int rc = resolve(a, op->path, op->path_len, &w, err, err_len);
    if (rc != 0)
        return rc;
    if (unlinkat(w.dir_fd, w.name, 0) != 0)
        return fail_errno(err, err_len, errno);
    return 0;
}

static int do_write(struct hm_applier *a, const struct hm_op *op, int *fd_out, char *err,
                    size_t err_len)
{
    int64_t offset = op->ints[0];
    if (offset < 0 || offset > INT64_MAX_ - MAX_DATA || op->data_len > MAX_DATA)
        return fail(err, err_len, EINVAL, "WRITE: offset out of range");
    int fd;
    int rc = writable(a, op, &fd, err, err_len);
    if (rc != 0)
        return rc;
    /* A large write's blocks are allocated first, as one extent (a hint: hamirror/syscalls.py,
     * allocate_ahead, says why; its error is the pwrite's to meet). */
    if (a->allocate_ahead && op->data_len >= HM_EARLY_WRITEBACK_MIN)
        (void)fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)op->data_len);
    ssize_t written = pwrite(fd, op->data, op->data_len, (off_t)offset);
    if (written < 0)
        return fail_errno(err, err_len, errno);
    if ((size_t)written != op->data_len)
        return fail(err, err_len, EIO, "short write on the secondary (%zd of %zu bytes)", written,
                    op->data_len);
    /* A large write, or a small one to a file last synced by an FSYNC (a log that commits: its next
     * fsync then has only the cache flush left to wait for; docs/performance.md, "A commit's
     * critical path"; not one whose commits arrive as WRITE_FSYNC: note_sync):
     * after its reply (hm_start_writeback), so the primary's wait for the reply does not include
     * the call. A commit message (WRITE_FSYNC) syncs right away: nothing to start. */
    if (written > 0 && op->op == HM_WRITE && (written >= HM_EARLY_WRITEBACK_MIN || was_synced(a, op))) {
        a->wb_fd = fd;
        a->wb_off = (off_t)offset;
        a->wb_len = (size_t)written;
    }
    *fd_out = fd;
    return 0;
}

static int do_truncate(struct hm_applier *a, const struct hm_op *op, char *err, size_t err_len)
{
    if (op->ints[0] < 0 || op->ints[0] > INT64_MAX_ - MAX_DATA)
        return fail(err, err_len, EINVAL, "TRUNCATE: length out of range");
    int fd;
    int rc = writable(a, op, &fd, err, err_len);
    if (rc == 0 && ftruncate(fd, (off_t)op->ints[0]) != 0)
        rc = fail_errno(err, err_len, errno);
    return rc;
}

static int do_fallocate(struct hm_applier *a, const struct hm_op *op, char *err, size_t err_len)
{
    int64_t mode = op->ints[0], offset = op->ints[1], length = op->ints[2];
    if (mode < 0 || mode > FALLOC_MODES || offset < 0 || length <= 0 || offset > INT64_MAX_ - length)
        return fail(err, err_len, EINVAL, "FALLOCATE: range out of bounds");
    int fd;
    int rc = writable(a, op, &fd, err, err_len);
    if (rc == 0 && fallocate(fd, (int)mode, (off_t)offset, (off_t)length) != 0)
        rc = fail_errno(err, err_len, errno);
    return rc;
}

static int sync_fd(int fd, int64_t datasync, char *err, size_t err_len)
{
    if ((datasync ? fdatasync(fd) : fsync(fd)) != 0)
        return fail_errno(err, err_len, errno);
    return 0;
}

static int do_fsync(struct hm_applier *a, const struct hm_op *op, int64_t datasync, char *err,
                    size_t err_len)
{
    struct entry *e = cache_find(a, &a->files, op->path, op->path_len);
    if (e != NULL) {
        int rc = sync_fd(e->fd, datasync, err, err_len);
        if (rc == 0)
            e->synced = 1;
        return rc;
    }
    if (is_root(op))
        return sync_fd(a->root_fd, datasync, err, err_len);
    struct where w;
    int fd, rc = resolve(a, op->path, op->path_len, &w, err, err_len);
    if (rc == 0)
        rc = open_data(w.dir_fd, w.name, O_RDONLY, 1, err, err_len, &fd);
    if (rc != 0)
        return rc;
    rc = sync_fd(fd, datasync, err, err_len);
    close(fd);
    return rc;
}

static int set_times(struct hm_applier *a, const struct hm_time *t, char *err, size_t err_len)
{
    if (check_path(t->path, t->len) != 0)
        return fail(err, err_len, EINVAL, "bad path in times");
    struct where w;
    int rc = resolve(a, t->path, t->len, &w, err, err_len);
    if (rc != 0)
        return rc;
    struct timespec ts[2];
    int64_t ns[2] = {t->atime_ns, t->mtime_ns};
    for (int i = 0; i < 2; i++) { /* floor division, as Python's os.utime(ns=) */
        ts[i].tv_sec = ns[i] / 1000000000;
        ts[i].tv_nsec = ns[i] % 1000000000;
        if (ts[i].tv_nsec < 0) {
            ts[i].tv_nsec += 1000000000;
            ts[i].tv_sec -= 1;
        }
    }
    if (utimensat(w.dir_fd, w.name, ts, AT_SYMLINK_NOFOLLOW) != 0)
        return fail_errno(err, err_len, errno);
    return 0;
}

/* entry points ----------------------------------------------------------------------------- */

static int expected_ints(int op)
{
    switch (op) {
    case HM_CREATE: return 4;
    case HM_MKDIR: case HM_FALLOCATE: return 3;
    case HM_WRITE_FSYNC: return 2;
    case HM_WRITE: case HM_TRUNCATE: case HM_FSYNC: return 1;
    case HM_UNLINK: case HM_UTIMENS: return 0;
    default: return -1;
    }
}

int hm_supported(int op, const int64_t *ints, int n_ints)
{
    if (expected_ints(op) < 0 || n_ints != expected_ints(op))
        return 0;
    return op != HM_CREATE || S_ISREG(ints[0]);
}

struct hm_applier *hm_new(int root_fd)
{
    struct hm_applier *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->root_fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    if (a->root_fd < 0) {
        free(a);
        return NULL;
    }
    a->use_openat2 = HM_USE_OPENAT2;
    /* Only ext4 gains from it; XFS would keep its speculative blocks past a growing file's end. */
    struct statfs fs;
    a->allocate_ahead = fstatfs(a->root_fd, &fs) == 0 && fs.f_type == EXT4_SUPER_MAGIC;
    a->wb_fd = -1;
    cache_init(&a->dirs);
    cache_init(&a->files);
    return a;
}

void hm_start_writeback(struct hm_applier *a)
{
    if (a->wb_fd < 0)
        return;
    /* Only a head start for the next sync, which reports any I/O error itself. */
    (void)sync_file_range(a->wb_fd, a->wb_off, (off_t)a->wb_len, SYNC_FILE_RANGE_WRITE);
    a->wb_fd = -1;
}

int hm_writeback_pending(const struct hm_applier *a)
{
    return a->wb_fd >= 0;
}

void hm_forget(struct hm_applier *a)
{
    a->wb_fd = -1; /* its descriptor is about to close */
    cache_clear(&a->files);
    cache_clear(&a->dirs);
}

void hm_free(struct hm_applier *a)
{
    if (a == NULL)
        return;
    hm_forget(a);
    close(a->root_fd);
    free(a);
}

int hm_cached(const struct hm_applier *a)
{
    int n = 0;
    for (int i = 0; i < CACHE_SIZE; i++)
        n += (a->dirs.e[i].fd >= 0) + (a->files.e[i].fd >= 0);
    return n;
}

int hm_apply(struct hm_applier *a, const struct hm_op *op, char *err, size_t err_len)
{
    err[0] = '\0';
    hm_start_writeback(a); /* before any descriptor of the cache may close */
    if (!hm_supported(op->op, op->ints, op->n_ints))
        return fail(err, err_len, EINVAL, "operation %d not applied by the native core", op->op);
    if (check_path(op->path, op->path_len) != 0)
        return fail(err, err_len, EINVAL, "bad path");
    if (op->n_times < 0 || op->n_times > HM_MAX_TIMES)
        return fail(err, err_len, EINVAL, "too many time updates");
    int makes_name = op->op == HM_CREATE || op->op == HM_MKDIR || op->op == HM_UNLINK;
    if (makes_name && is_root(op))
        return fail(err, err_len, EINVAL, "not allowed on the replicated directory itself");
    if (op->op == HM_WRITE_FSYNC && op->ints[1] != 0 && op->ints[1] != 1)
        return fail(err, err_len, EINVAL, "WRITE_FSYNC: datasync must be 0 or 1");
    int rc = 0, fd = -1;
    switch (op->op) {
    case HM_CREATE: rc = do_create(a, op, err, err_len); break;
    case HM_MKDIR: rc = do_mkdir(a, op, err, err_len); break;
    case HM_UNLINK: rc = do_unlink(a, op, err, err_len); break;
    case HM_WRITE: case HM_WRITE_FSYNC: rc = do_write(a, op, &fd, err, err_len); break;
    case HM_TRUNCATE: rc = do_truncate(a, op, err, err_len); break;
    case HM_FALLOCATE: rc = do_fallocate(a, op, err, err_len); break;
    case HM_FSYNC: rc = do_fsync(a, op, op->ints[0], err, err_len); break;
    default: break; /* UTIMENS: the times only */
    }
    for (int i = 0; rc == 0 && i < op->n_times; i++)
        rc = set_times(a, &op->times[i], err, err_len);
    if (rc == 0 && op->op == HM_WRITE_FSYNC) { /* a WRITE then an FSYNC: it covers the times too */
        rc = sync_fd(fd, op->ints[1], err, err_len);
        if (rc == 0)
            note_sync(a, op, 0);
    }
    if (rc != 0) /* the tree may not be what the caches think: start again from names */
        hm_forget(a);
    return rc;
}
