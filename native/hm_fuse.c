/* The request loop and the read-only requests, in C without the GIL: see hm_fuse.h.
 *
 * Results equal the Python Interception's read methods (hamirror/fs/operations.py): lstat
 * semantics (AT_SYMLINK_NOFOLLOW), xattrs through /proc/self/fd/<root>/<path> without following
 * the last symlink, hamirror's conflict folder hidden at the top.
 */
#define _GNU_SOURCE
#include "hm_fuse.h"
#include "hm_loop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

__thread fuse_req_t hm_current_req;

static int lstat_rel(struct hm_engine *e, const char *path, struct stat *st)
{
    return fstatat(e->root_fd, hm_rel(path), st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
}

static int is_conflict_dir(fuse_ino_t parent, const char *name)
{
    return parent == FUSE_ROOT_ID && strcmp(name, HM_CONFLICT_DIR) == 0;
}

static void floor_time(struct timespec *t, long granularity)
{
    t->tv_nsec -= t->tv_nsec % granularity;
}

void hm_kernel_times(const struct hm_engine *e, struct stat *st)
{
    long granularity = (long)e->time_granularity_ns;
    if (granularity <= 1 || granularity > 1000000000L || !S_ISREG(st->st_mode))
        return;
    floor_time(&st->st_atim, granularity);
    floor_time(&st->st_mtim, granularity);
    floor_time(&st->st_ctim, granularity);
}

void hm_reply_entry(fuse_req_t req, uint64_t parent, const char *name, const char *path)
{
    struct hm_engine *e = hm_engine_of(req);
    if (hm_names.engine == NULL) {
        /* The change was queued and the lock let go: "path" may be stale by now (a rename of a
         * directory above it). (parent, name) is not: the kernel holds the parent's lock. */
        char fresh[HM_PATH];
        pthread_rwlock_rdlock(&e->names);
        hm_names.engine = e;
        hm_names.early = 0;
        int r = hm_table_child_path(&e->table, parent, name, fresh, sizeof(fresh));
        if (r != 0)
            fuse_reply_err(req, -r);
        else
            hm_reply_entry(req, parent, name, fresh);
        hm_names_release(0);
        return;
    }
    struct fuse_entry_param entry;
    memset(&entry, 0, sizeof(entry));
    int r = lstat_rel(e, path, &entry.attr);
    if (r != 0) {
        fuse_reply_err(req, -r);
        return;
    }
    hm_kernel_times(e, &entry.attr);
    entry.ino = hm_table_learn(&e->table, parent, name, &entry.attr);
    if (entry.ino == 0) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    entry.attr_timeout = entry.entry_timeout = HM_TIMEOUT;
    if (fuse_reply_entry(req, &entry) != 0)
        hm_table_forget(&e->table, entry.ino, 1);   /* interrupted: the kernel holds no reference */
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct hm_engine *e = hm_engine_of(req);
    char path[HM_PATH];
    if (is_conflict_dir(parent, name) || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    int r = hm_table_child_path(&e->table, parent, name, path, sizeof(path));
    if (r != 0) {
        fuse_reply_err(req, -r);
        return;
    }
    hm_reply_entry(req, parent, name, path);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    hm_table_forget(&hm_engine_of(req)->table, ino, nlookup);
    fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct hm_engine *e = hm_engine_of(req);
    for (size_t k = 0; k < count; k++)
        hm_table_forget(&e->table, forgets[k].ino, forgets[k].nlookup);
    fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct hm_engine *e = hm_engine_of(req);
    struct stat st;
    int r;
    if (fi != NULL)
        r = fstat((int)fi->fh, &st) == 0 ? 0 : -errno;
    else {
        char path[HM_PATH];
        r = hm_table_path(&e->table, ino, path, sizeof(path));
        if (r == 0)
            r = lstat_rel(e, path, &st);
    }
    if (r != 0) {
        fuse_reply_err(req, -r);
        return;
    }
    hm_kernel_times(e, &st);
    fuse_reply_attr(req, &st, HM_TIMEOUT);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct hm_engine *e = hm_engine_of(req);
    char path[HM_PATH], target[PATH_MAX + 1];
    int r = hm_table_path(&e->table, ino, path, sizeof(path));
    if (r != 0) {
        fuse_reply_err(req, -r);
        return;
    }
    ssize_t n = readlinkat(e->root_fd, hm_rel(path), target, sizeof(target) - 1);
    if (n < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    target[n] = '\0';
    fuse_reply_readlink(req, target);
}

struct hm_dir {
    DIR *dp;
    struct dirent *entry;   /* read but not yet given to the kernel */
    off_t offset;
    int is_root;
};

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct hm_engine *e = hm_engine_of(req);
    char path[HM_PATH];
    int r = hm_table_path(&e->table, ino, path, sizeof(path));
    if (r != 0) {
        fuse_reply_err(req, -r);
        return;
    }
    struct hm_dir *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    int fd = openat(e->root_fd, hm_rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (d->dp = fdopendir(fd)) == NULL) {
        r = errno;
        if (fd >= 0)
            close(fd);
        free(d);
        fuse_reply_err(req, r);
        return;
    }
    d->is_root = ino == FUSE_ROOT_ID;
    fi->fh = (uint64_t)(uintptr_t)d;
    if (fuse_reply_open(req, fi) != 0) {
        closedir(d->dp);
        free(d);
    }
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi)
{
    (void)ino;
    struct hm_dir *d = (struct hm_dir *)(uintptr_t)fi->fh;
    char *buf = malloc(size), *p = buf;
    size_t rem = size;
    int err = 0;
    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (offset != d->offset) {
        seekdir(d->dp, offset);
        d->entry = NULL;
        d->offset = offset;
    }
    for (;;) {
        if (d->entry == NULL) {
            errno = 0;
            d->entry = readdir(d->dp);
            if (d->entry == NULL) {
                err = errno;
                break;
            }
        }
        off_t next = d->entry->d_off;
        const char *name = d->entry->d_name;
        if (!(d->is_root && strcmp(name, HM_CONFLICT_DIR) == 0)) {
            struct stat st;
            memset(&st, 0, sizeof(st));
            st.st_ino = d->entry->d_ino;
            st.st_mode = (mode_t)d->entry->d_type << 12;
            size_t len = fuse_add_direntry(req, p, rem, name, &st, next);
            if (len > rem)
                break;
            p += len;
            rem -= len;
        }
        d->entry = NULL;
        d->offset = next;
    }
    if (err != 0 && rem == size)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, size - rem);
    free(buf);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    struct hm_dir *d = (struct hm_dir *)(uintptr_t)fi->fh;
    closedir(d->dp);
    free(d);
    fuse_reply_err(req, 0);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    char *buf = malloc(size ? size : 1);
    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ssize_t n = pread((int)fi->fh, buf, size, off);
    if (n < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct statvfs sv;
    if (fstatvfs(hm_engine_of(req)->root_fd, &sv) != 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_statfs(req, &sv);
}

/* "/proc/self/fd/<root>/<path>": the xattr calls have no *at variant. */
static int proc_path(fuse_req_t req, fuse_ino_t ino, char *out, size_t size)
{
    struct hm_engine *e = hm_engine_of(req);
    char path[HM_PATH];
    int r = hm_table_path(&e->table, ino, path, sizeof(path));
    if (r != 0)
        return r;
    if ((size_t)snprintf(out, size, "/proc/self/fd/%d/%s", e->root_fd, hm_rel(path)) >= size)
        return -ENAMETOOLONG;
    return 0;
}

static void reply_xattr(fuse_req_t req, size_t size, char *buf, ssize_t n)
{
    if (n < 0)
        fuse_reply_err(req, errno);
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)n);
    else
        fuse_reply_buf(req, buf, (size_t)n);
}

/* getxattr (name given) or listxattr (name NULL), as Interception's: the last symlink not followed. */
static void xattr_request(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    char proc[HM_PATH + 64];
    int r = proc_path(req, ino, proc, sizeof(proc));
    if (r != 0) {
        fuse_reply_err(req, -r);
        return;
    }
    char *buf = size ? malloc(size) : NULL;
    if (size && buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    reply_xattr(req, size, buf, name != NULL ? lgetxattr(proc, name, buf, size) : llistxattr(proc, buf, size));
    free(buf);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    xattr_request(req, ino, name, size);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    xattr_request(req, ino, NULL, size);
}

/* Depth-first below the open directory ``fd`` (taken) whose path is buf[0..len): a name of the
 * file (dev, ino), appended to buf. Directories of other filesystems and the conflict folder are
 * not entered. */
static int search(int fd, dev_t dev, ino_t ino, char *buf, size_t len, int depth)
{
    DIR *dp = fdopendir(fd);
    if (dp == NULL) {
        close(fd);
        return -ENOENT;
    }
    int r = -ENOENT;
    struct dirent *d;
    while (r != 0 && (d = readdir(dp)) != NULL) {
        const char *name = d->d_name;
        size_t nlen = strlen(name);
        struct stat st;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || (depth == 0 && strcmp(name, HM_CONFLICT_DIR) == 0))
            continue;
        if (d->d_type != DT_DIR && d->d_type != DT_UNKNOWN && d->d_ino != ino)
            continue;
        if (len + 1 + nlen + 1 > HM_PATH || fstatat(dirfd(dp), name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        buf[len] = '/';
        memcpy(buf + len + 1, name, nlen + 1);
        if (st.st_dev == dev && st.st_ino == ino)
            r = 0;
        else if (S_ISDIR(st.st_mode) && st.st_dev == dev && depth < 256) {
            int sub = openat(dirfd(dp), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                r = search(sub, dev, ino, buf, len + 1 + nlen, depth + 1);
        }
    }
    closedir(dp);
    if (r != 0)
        buf[len] = '\0';
    return r;
}

int hm_find_name(struct hm_engine *e, dev_t dev, ino_t ino, char *buf)
{
    buf[0] = '\0';
    int fd = openat(e->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : search(fd, dev, ino, buf, 0, 0);
}

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
    struct hm_engine *e = userdata;
    /* libfuse wants v1 by default where offered, which leaves the kills of every write to us
     * without saying who writes: v2 goes in the reply when offered (hm_killpriv.h), else the
     * kernel kills itself. */
    conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
    if (e->writeback) {
        if (!(conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
            snprintf(e->error, sizeof(e->error), "barrier mode: this kernel offers no FUSE writeback cache");
            fuse_session_exit(e->se);
            return;
        }
        conn->want |= FUSE_CAP_WRITEBACK_CACHE;
        conn->max_background = e->max_background;
        conn->congestion_threshold = e->max_background * 3 / 4;
    }
    if (e->time_granularity_ns != 0)   /* Python's choice (hamirror/fs/mount.py) */
        conn->time_gran = e->time_granularity_ns;
    hm_py_init(e);
}

/* Paths and renames (docs/native.md): a request that turns a node into a path holds the namespace
 * lock shared until its change is queued for the peer or it replied (see hm_fuse.h), so the path
 * it used (for a local call, for the journal or for the message) still names the file it acted on
 * when the message takes its place in the stream. Without it a write through an open handle could
 * compute "d/f", a rename of d and a new d/f could be queued first, and the write would reach the
 * peer under the new file's name. rename, unlink and rmdir hold it exclusive. ``early`` 0 keeps
 * it to the reply (setattr: several changes under one path). The engine is read before the
 * request is served: the reply frees the request. */
__thread struct hm_names_held hm_names;

void hm_names_release(int ok)
{
    struct hm_engine *e = hm_names.engine;
    if (e == NULL)
        return;
    struct hm_pending *p = hm_names.pending;
    if (p != NULL && ok)
        p->apply(e, p);
    hm_names.engine = NULL;
    hm_names.pending = NULL;
    pthread_rwlock_unlock(&e->names);
}

#define NAMES_LOCKED_AS(op, lock, early_release, fn, params, args) \
    static void locked_##op(fuse_req_t req, params)              \
    {                                                            \
        struct hm_engine *locked_e = hm_engine_of(req);          \
        lock(&locked_e->names);                                  \
        hm_names.engine = locked_e;                              \
        hm_names.early = early_release;                          \
        hm_names.pending = NULL;                                 \
        fn(req, args);                                           \
        hm_names_release(0);                                     \
    }
#define P(...) __VA_ARGS__
#define NAMES_LOCKED(op, lock, fn, params, args) NAMES_LOCKED_AS(op, lock, 1, fn, P(params), P(args))
NAMES_LOCKED(lookup, pthread_rwlock_rdlock, ll_lookup, P(fuse_ino_t parent, const char *name), P(parent, name))
NAMES_LOCKED(getattr, pthread_rwlock_rdlock, ll_getattr, P(fuse_ino_t ino, struct fuse_file_info *fi), P(ino, fi))
NAMES_LOCKED_AS(setattr, pthread_rwlock_rdlock, 0, hm_py_setattr, P(fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi), P(ino, attr, to_set, fi))
NAMES_LOCKED(readlink, pthread_rwlock_rdlock, ll_readlink, P(fuse_ino_t ino), P(ino))
NAMES_LOCKED(mknod, pthread_rwlock_rdlock, hm_py_mknod, P(fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev), P(parent, name, mode, rdev))
NAMES_LOCKED(mkdir, pthread_rwlock_rdlock, hm_py_mkdir, P(fuse_ino_t parent, const char *name, mode_t mode), P(parent, name, mode))
NAMES_LOCKED(symlink, pthread_rwlock_rdlock, hm_py_symlink, P(const char *link, fuse_ino_t parent, const char *name), P(link, parent, name))
NAMES_LOCKED(link, pthread_rwlock_rdlock, hm_py_link, P(fuse_ino_t ino, fuse_ino_t newparent, const char *newname), P(ino, newparent, newname))
NAMES_LOCKED(open, pthread_rwlock_rdlock, hm_py_open, P(fuse_ino_t ino, struct fuse_file_info *fi), P(ino, fi))
NAMES_LOCKED(write, pthread_rwlock_rdlock, hm_py_write, P(fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi), P(ino, buf, size, off, fi))
NAMES_LOCKED(flush, pthread_rwlock_rdlock, hm_py_flush, P(fuse_ino_t ino, struct fuse_file_info *fi), P(ino, fi))
NAMES_LOCKED(release, pthread_rwlock_rdlock, hm_py_release, P(fuse_ino_t ino, struct fuse_file_info *fi), P(ino, fi))
NAMES_LOCKED(fsync, pthread_rwlock_rdlock, hm_py_fsync, P(fuse_ino_t ino, int datasync, struct fuse_file_info *fi), P(ino, datasync, fi))
NAMES_LOCKED(opendir, pthread_rwlock_rdlock, ll_opendir, P(fuse_ino_t ino, struct fuse_file_info *fi), P(ino, fi))
NAMES_LOCKED(fsyncdir, pthread_rwlock_rdlock, hm_py_fsyncdir, P(fuse_ino_t ino, int datasync, struct fuse_file_info *fi), P(ino, datasync, fi))
NAMES_LOCKED(setxattr, pthread_rwlock_rdlock, hm_py_setxattr, P(fuse_ino_t ino, const char *name, const char *value, size_t size, int flags), P(ino, name, value, size, flags))
NAMES_LOCKED(getxattr, pthread_rwlock_rdlock, ll_getxattr, P(fuse_ino_t ino, const char *name, size_t size), P(ino, name, size))
NAMES_LOCKED(listxattr, pthread_rwlock_rdlock, ll_listxattr, P(fuse_ino_t ino, size_t size), P(ino, size))
NAMES_LOCKED(removexattr, pthread_rwlock_rdlock, hm_py_removexattr, P(fuse_ino_t ino, const char *name), P(ino, name))
NAMES_LOCKED(create, pthread_rwlock_rdlock, hm_py_create, P(fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi), P(parent, name, mode, fi))
NAMES_LOCKED(fallocate, pthread_rwlock_rdlock, hm_py_fallocate, P(fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi), P(ino, mode, offset, length, fi))
NAMES_LOCKED(unlink, pthread_rwlock_wrlock, hm_py_unlink, P(fuse_ino_t parent, const char *name), P(parent, name))
NAMES_LOCKED(rmdir, pthread_rwlock_wrlock, hm_py_rmdir, P(fuse_ino_t parent, const char *name), P(parent, name))
NAMES_LOCKED(rename, pthread_rwlock_wrlock, hm_py_rename, P(fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags), P(parent, name, newparent, newname, flags))

const struct fuse_lowlevel_ops hm_ops = {
    .init = ll_init,
    .lookup = locked_lookup,
    .forget = ll_forget,
    .forget_multi = ll_forget_multi,
    .getattr = locked_getattr,
    .setattr = locked_setattr,
    .readlink = locked_readlink,
    .mknod = locked_mknod,
    .mkdir = locked_mkdir,
    .unlink = locked_unlink,
    .rmdir = locked_rmdir,
    .symlink = locked_symlink,
    .rename = locked_rename,
    .link = locked_link,
    .open = locked_open,
    .read = ll_read,
    .write = locked_write,
    .flush = locked_flush,
    .release = locked_release,
    .fsync = locked_fsync,
    .opendir = locked_opendir,
    .readdir = ll_readdir,
    .releasedir = ll_releasedir,
    .fsyncdir = locked_fsyncdir,
    .statfs = ll_statfs,
    .setxattr = locked_setxattr,
    .getxattr = locked_getxattr,
    .listxattr = locked_listxattr,
    .removexattr = locked_removexattr,
    .create = locked_create,
    .fallocate = locked_fallocate,
};

int hm_serve(struct hm_engine *e, const char *mountpoint, const char *options, unsigned max_threads,
             unsigned idle_threads)
{
    char *argv[] = {"hamirror", "-o", (char *)options, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    int result = -1;
    struct fuse_lowlevel_ops ops = hm_ops;   /* copied by the session */
    if (!e->flush)
        ops.flush = NULL;   /* one close per file no longer crosses into Python for nothing */
    e->se = fuse_session_new(&args, &ops, sizeof(ops), e);
    if (e->se == NULL) {
        snprintf(e->error, sizeof(e->error), "fuse_session_new failed (options %s)", options);
        return -1;
    }
    if (fuse_set_signal_handlers(e->se) != 0) {
        snprintf(e->error, sizeof(e->error), "cannot set signal handlers");
        goto destroy;
    }
    if (fuse_session_mount(e->se, mountpoint) != 0) {
        snprintf(e->error, sizeof(e->error), "cannot mount on %s", mountpoint);
        goto handlers;
    }
    if (hm_killpriv_install(e->se) != 0) {
        snprintf(e->error, sizeof(e->error), "cannot set the session's I/O");
        goto unmount;
    }
    int r = hm_loop_run(e->se, max_threads, idle_threads);   /* hm_loop.c: workers that give pages back */
    if (e->error[0] == '\0') {
        if (r != 0)
            snprintf(e->error, sizeof(e->error), "the FUSE loop ended with error %d", r);
        else
            result = 0;
    }
unmount:
    fuse_session_unmount(e->se);
handlers:
    fuse_remove_signal_handlers(e->se);
destroy:
    fuse_session_destroy(e->se);
    e->se = NULL;
    return result;
}
