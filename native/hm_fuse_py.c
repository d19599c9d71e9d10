/* The requests that change something, handed to Python: see hm_fuse.h.
 *
 * Each calls an Interception method (hamirror/fs/operations.py) with path-based arguments (paths
 * "/a/b", None for a file unlinked while open), holding the GIL only for the call. The inode table is
 * read before (paths) and updated after (new names, unlinks, renames), never locked across the
 * call. An OSError becomes its errno; any other exception goes to on_error (the daemon's log)
 * and EIO: a bug in one request never ends the daemon.
 */
#define _GNU_SOURCE
#include "hm_fuse.h"
#include "hm_writeback.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

/* This libfuse thread's Python thread state, made once and kept between requests (libfuse keeps
 * its idle threads): a state per request would cost its setup every time
 * (tests/test_fuse_threads.py). */
static __thread PyThreadState *kept_state;

/* A worker that libfuse retires (more idle than hm_serve's idle_threads) or cancels at the end
 * gives its state back; without this, every thread ever started would leave one behind. */
static pthread_key_t state_key;
static pthread_once_t state_key_once = PTHREAD_ONCE_INIT;

static void drop_state(void *state)
{
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing())
#else
    if (_Py_IsFinalizing())
#endif
        return;                /* the interpreter is going: taking the GIL could block for good */
    /* Not PyGILState_Release: glibc may have emptied Python's own key of this thread already. */
    PyEval_RestoreThread((PyThreadState *)state);
    PyThreadState_Clear((PyThreadState *)state);
    PyThreadState_DeleteCurrent();   /* and releases the GIL */
}

static void make_state_key(void)
{
    pthread_key_create(&state_key, drop_state);
}

void hm_gil_enter(void)
{
    if (kept_state != NULL) {
        PyEval_RestoreThread(kept_state);
        return;
    }
    PyGILState_Ensure();       /* released only when the thread ends (drop_state) */
    pthread_once(&state_key_once, make_state_key);
    pthread_setspecific(state_key, PyThreadState_Get());
}

void hm_gil_leave(void)
{
    kept_state = PyEval_SaveThread();
}

PyObject *hm_pypath(void *p)
{
    if (p == NULL)
        Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault((const char *)p);
}

/* A handle as Python sees it: its descriptor, or None without one. */
PyObject *hm_pyfh(void *fi)
{
    if (fi == NULL)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(((struct fuse_file_info *)fi)->fh);
}

/* The current exception as an errno (GIL held); anything but an OSError is logged. */
static int failed(struct hm_engine *e, const char *what)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    int err = EIO;
    if (value != NULL && PyObject_IsInstance(value, PyExc_OSError) == 1) {
        PyObject *no = PyObject_GetAttrString(value, "errno");
        if (no != NULL && PyLong_Check(no)) {
            long v = PyLong_AsLong(no);
            if (v > 0 && v < 4096)
                err = (int)v;
        }
        Py_XDECREF(no);
        PyErr_Clear();
    } else if (value != NULL) {
        if (tb != NULL)
            PyException_SetTraceback(value, tb);
        PyObject *r = e->on_error != NULL ? PyObject_CallFunction(e->on_error, "sO", what, value) : NULL;
        if (r == NULL)
            PyErr_Print();
        Py_XDECREF(r);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return err;
}

/* ops.<method>(args) with the GIL held: 0 (the int result in *out if asked) or an errno. */
static int vcall_held(struct hm_engine *e, const char *method, long long *out, const char *fmt, va_list ap)
{
    PyObject *args = Py_VaBuildValue(fmt, ap);
    if (args == NULL)
        return failed(e, method);
    PyObject *fn = PyObject_GetAttrString(e->ops, method);
    PyObject *result = fn != NULL ? PyObject_Call(fn, args, NULL) : NULL;
    Py_XDECREF(fn);
    Py_DECREF(args);
    if (result == NULL)
        return failed(e, method);
    int err = 0;
    if (out != NULL) {
        *out = result == Py_None ? 0 : PyLong_AsLongLong(result);
        if (*out == -1 && PyErr_Occurred())
            err = failed(e, method);
    }
    Py_DECREF(result);
    return err;
}

int hm_call_held(struct hm_engine *e, const char *method, long long *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = vcall_held(e, method, out, fmt, ap);
    va_end(ap);
    return err;
}

/* Python runs for ``req``: the GIL taken, the request known to ``context()``; and after it. */
struct hm_engine *hm_python_enter(fuse_req_t req)
{
    hm_current_req = req;
    hm_gil_enter();
    return hm_engine_of(req);
}

void hm_python_leave(void)
{
    hm_gil_leave();
    hm_current_req = NULL;
}

int hm_call(fuse_req_t req, const char *method, long long *out, const char *fmt, ...)
{
    struct hm_engine *e = hm_python_enter(req);
    va_list ap;
    va_start(ap, fmt);
    int err = vcall_held(e, method, out, fmt, ap);
    va_end(ap);
    hm_python_leave();
    return err;
}

/* Path of ``ino`` or NULL (unlinked while open: Python gets None); an errno for other failures.
 * A file whose known names are gone while it has other links is reached by the name a search
 * found (its hint), checked before use and searched again when it moved. */
int hm_path_or_none(fuse_req_t req, fuse_ino_t ino, char *buf, const char **path)
{
    struct hm_engine *e = hm_engine_of(req);
    int r = hm_table_path(&e->table, ino, buf, HM_PATH);
    *path = r == 0 ? buf : NULL;
    dev_t dev;
    ino_t ino_nr;
    struct stat st;
    if (r == -ENOENT && hm_table_hint(&e->table, ino, buf, HM_PATH, &dev, &ino_nr) == 0) {
        if (fstatat(e->root_fd, hm_rel(buf), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dev && st.st_ino == ino_nr)
            *path = buf;
        else {
            int found = hm_find_name(e, dev, ino_nr, buf) == 0;
            hm_table_set_hint(&e->table, dev, ino_nr, found ? buf : NULL);
            *path = found ? buf : NULL;
        }
    }
    return r == -ENOENT ? 0 : -r;
}

/* Path of ``ino``, which must still have a name (ENOENT otherwise). */
static int named_path(fuse_req_t req, fuse_ino_t ino, char *buf, const char **path)
{
    int err = hm_path_or_none(req, ino, buf, path);
    return err == 0 && *path == NULL ? ENOENT : err;
}

/* ``st`` (stat before the call) lost a name: if that was its last known one while it has other
 * links, find one of them, so that its changes are still sent under a name the peer has. */
static void keep_a_name(struct hm_engine *e, const struct stat *st)
{
    char buf[HM_PATH];
    if (!S_ISDIR(st->st_mode) && st->st_nlink > 1 && hm_table_nameless(&e->table, st->st_dev, st->st_ino) &&
        hm_find_name(e, st->st_dev, st->st_ino, buf) == 0)
        hm_table_set_hint(&e->table, st->st_dev, st->st_ino, buf);
}

static int child_path(fuse_req_t req, fuse_ino_t parent, const char *name, char *buf)
{
    return -hm_table_child_path(&hm_engine_of(req)->table, parent, name, buf, HM_PATH);
}

static void reply_status(fuse_req_t req, int err)
{
    fuse_reply_err(req, err);
}

/* A handle that cannot read (O_WRONLY) has no use for the kernel's page cache of the file: its
 * writes reach us straight from the caller's pages (FOPEN_DIRECT_IO), one copy fewer per write
 * and no second cached copy of what the backing file's cache holds. Python decides when
 * (hamirror/fs/lowlevel.py, direct_writes_coherent: never in barrier mode, and only on kernels
 * that drop other handles' cached pages over a direct write). */
static int goes_direct(const struct hm_engine *e, const struct fuse_file_info *fi)
{
    return e->direct_writes && (fi->flags & O_ACCMODE) == O_WRONLY;
}

static void write_only_direct(const struct hm_engine *e, struct fuse_file_info *fi)
{
    if (goes_direct(e, fi))
        fi->direct_io = 1;
}

void hm_py_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    char buf[HM_PATH];
    const char *path;
    long long fh;
    int err = named_path(req, ino, buf, &path);   /* no name left to open it by: ENOENT */
    if (err == 0 && (fi->flags & O_TRUNC) && (hm_kill_flags & HM_KILL_SUIDGID))
        err = hm_call(req, "kill_privileges", NULL, "(O&Oi)", hm_pypath, path, Py_None, HM_KILL_SUIDGID);
    if (err == 0)
        err = hm_call(req, "open", &fh, "(O&i)", hm_pypath, path, fi->flags);
    if (err != 0) {
        fuse_reply_err(req, err);
        return;
    }
    fi->fh = (uint64_t)fh;
    /* The mount is the only writer of its directory (a node's copy is written by its mount or, on
     * a secondary, by its receiver, never both), so the kernel's cached pages of the file are
     * still right: without this, every open dropped them and the next reads went through us
     * (PostgreSQL's backends each opening a table re-read it). */
    fi->keep_cache = 1;
    write_only_direct(hm_engine_of(req), fi);
    if (fuse_reply_open(req, fi) != 0)
        hm_call(req, "release", NULL, "(O&K)", hm_pypath, path, fi->fh);
}

void hm_py_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
    struct hm_engine *e = hm_engine_of(req);
    char path[HM_PATH];
    long long fh;
    int err = child_path(req, parent, name, path);
    if (err == 0)
        err = hm_call(req, "create", &fh, "(O&Ii)", hm_pypath, path, (unsigned)mode, fi->flags);
    if (err != 0) {
        fuse_reply_err(req, err);
        return;
    }
    struct fuse_entry_param entry;
    memset(&entry, 0, sizeof(entry));
    fi->fh = (uint64_t)fh;
    if (fstat((int)fh, &entry.attr) != 0 ||
        (entry.ino = hm_table_learn(&e->table, parent, name, &entry.attr)) == 0) {
        err = errno ? errno : ENOMEM;
        hm_call(req, "release", NULL, "(O&K)", hm_pypath, path, fi->fh);
        fuse_reply_err(req, err);
        return;
    }
    hm_kernel_times(e, &entry.attr);
    entry.attr_timeout = entry.entry_timeout = HM_TIMEOUT;
    write_only_direct(e, fi);
    if (fuse_reply_create(req, &entry, fi) != 0) {
        hm_table_forget(&e->table, entry.ino, 1);
        hm_call(req, "release", NULL, "(O&K)", hm_pypath, path, fi->fh);
    }
}

static int sync_handle(fuse_req_t req, fuse_ino_t ino, const char *path, int datasync,
                       struct fuse_file_info *fi);

/* ``write`` with the data as a view of the request's buffer, not a copy of it (a bytes object
 * cost a malloc and a copy of every write, a MiB for a large one). The buffer is the worker's
 * and its next request is read into it: the view is released when the call returns, so a view
 * kept past it (anything that keeps data must copy it: protocol.kept) raises ValueError instead
 * of reading another request's bytes. A slice of the view would outlive that; none is kept. */
static int call_write(fuse_req_t req, const char *path, const char *data, size_t size, off_t off,
                      uint64_t fh, long long *written)
{
    struct hm_engine *e = hm_python_enter(req);
    int err;
    PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)size, PyBUF_READ);
    if (view == NULL) {
        err = failed(e, "write");
    } else {
        err = hm_call_held(e, "write", written, "(O&OLK)", hm_pypath, path, view, (long long)off, fh);
        PyObject *released = PyObject_CallMethod(view, "release", NULL);
        if (released == NULL)
            PyErr_Clear();   /* only while exported (a buffer taken, not given back): nothing here does */
        Py_XDECREF(released);
        Py_DECREF(view);
    }
    hm_python_leave();
    return err;
}

void hm_py_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off, struct fuse_file_info *fi)
{
    char buf[HM_PATH];
    const char *path;
    long long written = 0;
    int err = hm_path_or_none(req, ino, buf, &path);
    unsigned kill = 0;
    /* What the VFS clears before a write (hm_killpriv.h), when the kernel leaves it to us. */
    if (err == 0 && hm_killpriv_active(&hm_engine_of(req)->killpriv))
        kill = hm_killpriv_needed((int)fi->fh, hm_kill_flags);
    if (err == 0 && kill != 0)
        err = hm_call(req, "kill_privileges", NULL, "(O&Ki)", hm_pypath, path, fi->fh, kill & HM_KILL_SUIDGID);
    if (err == 0)
        err = call_write(req, path, data, size, off, fi->fh, &written);
    /* A write that must be durable when it returns (O_DSYNC or O_SYNC handle, pwritev2 RWF_DSYNC
     * or RWF_SYNC: the kernel's fuse_write_flags puts them in the request's flags). On the cached
     * path the kernel follows it with an FSYNC; on a direct handle it sends nothing after it, so
     * the write syncs here, both copies, through the same fsync as the kernel's. */
    if (err == 0 && written > 0 && goes_direct(hm_engine_of(req), fi) && (fi->flags & O_DSYNC))
        err = sync_handle(req, ino, path, (fi->flags & O_SYNC) != O_SYNC, fi);
    if (err != 0) {
        fuse_reply_err(req, err);
        return;
    }
    /* A large write's pages start for our disk once the writer has its answer (the receiver does
     * the same with its copy): the fsync that follows finds them written, and the writer's next
     * write is not kept waiting for it (sync_file_range took 300-400 us per MiB here). A hint only:
     * it starts I/O, takes no error (the fsync still writes, waits and reports), and goes through
     * a descriptor of its own, since a close after the reply may free the handle's number. */
    int own = size >= HM_EARLY_WRITEBACK_MIN && written > 0 ? fcntl((int)fi->fh, F_DUPFD_CLOEXEC, 0) : -1;
    fuse_reply_write(req, (size_t)written);
    if (own >= 0) {
        (void)sync_file_range(own, off, written, SYNC_FILE_RANGE_WRITE);
        close(own);
    }
}

/* ``call``, with the kernel's mtime deferred on ``ino`` (hm_setattr.c) applied first in the same
 * hold of the GIL and of the namespace lock: a barrier (flush, fsync) sends it before it waits.
 * Its error is the call's. */
static int call_timed(fuse_req_t req, fuse_ino_t ino, const char *path, struct fuse_file_info *fi,
                      const char *method, const char *fmt, ...)
{
    struct hm_engine *e = hm_engine_of(req);
    struct timespec mtime;
    int deferred = hm_table_take_mtime(&e->table, ino, &mtime);
    va_list ap;
    hm_python_enter(req);
    int err = 0;
    if (deferred) {
        int early = hm_names.early;
        hm_names.early = 0;   /* its change queued must not let the path go: the call uses it next */
        err = hm_apply_mtime_held(e, path, fi, &mtime);
        hm_names.early = early;
    }
    if (err == 0) {
        va_start(ap, fmt);
        err = vcall_held(e, method, NULL, fmt, ap);
        va_end(ap);
    }
    hm_python_leave();
    return err;
}

void hm_py_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    char buf[HM_PATH];
    const char *path;
    int err = hm_path_or_none(req, ino, buf, &path);
    if (err == 0)
        err = call_timed(req, ino, path, fi, "flush", "(O&K)", hm_pypath, path, fi->fh);
    reply_status(req, err);
}

/* Barrier mode (``ops.release_needed`` false): the handle is ours alone to close, once the
 * kernel's mtime deferred on the node, if any, is applied and queued (whatever its result). */
void hm_py_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct hm_engine *e = hm_engine_of(req);
    char buf[HM_PATH];
    const char *path;
    struct timespec mtime;
    if (e->release) {
        hm_path_or_none(req, ino, buf, &path);   /* the handle is closed whatever the path */
        reply_status(req, call_timed(req, ino, path, fi, "release", "(O&K)", hm_pypath, path, fi->fh));
        return;
    }
    if (hm_table_take_mtime(&e->table, ino, &mtime)) {
        hm_path_or_none(req, ino, buf, &path);
        hm_python_enter(req);
        hm_apply_mtime_held(e, path, fi, &mtime);
        hm_python_leave();
    }
    reply_status(req, close((int)fi->fh) == 0 ? 0 : errno);
}

static int sync_handle(fuse_req_t req, fuse_ino_t ino, const char *path, int datasync, struct fuse_file_info *fi)
{
    /* An fdatasync leaves the kernel's deferred mtime for later (hm_setattr.c): it covers the
     * data, not the times, locally as well (fdatasync(2)), and both copies have the same times. */
    if (datasync)
        return hm_call(req, "fsync", NULL, "(O&iK)", hm_pypath, path, datasync, fi->fh);
    return call_timed(req, ino, path, fi, "fsync", "(O&iK)", hm_pypath, path, datasync, fi->fh);
}

void hm_py_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    char buf[HM_PATH];
    const char *path;
    int err = hm_path_or_none(req, ino, buf, &path);
    if (err == 0)
        err = sync_handle(req, ino, path, datasync, fi);
    reply_status(req, err);
}

void hm_py_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)fi;   /* our directory handle is not a descriptor: Interception opens its own */
    char buf[HM_PATH];
    const char *path;
    int err = named_path(req, ino, buf, &path);
    if (err == 0)
        err = hm_call(req, "fsyncdir", NULL, "(O&ii)", hm_pypath, path, datasync, 0);
    reply_status(req, err);
}

/* A new entry's reply: the error, or the entry made under path (stat'ed again by its name). */
static void reply_made(fuse_req_t req, int err, fuse_ino_t parent, const char *name, const char *path)
{
    if (err != 0)
        fuse_reply_err(req, err);
    else
        hm_reply_entry(req, parent, name, path);
}

/* As fuse_lib_mknod: a regular file is made by create + release (one CREATE to the peer). */
void hm_py_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    char path[HM_PATH];
    int err = child_path(req, parent, name, path);
    if (err == 0 && S_ISREG(mode)) {
        long long fh;
        err = hm_call(req, "create", &fh, "(O&Ii)", hm_pypath, path, (unsigned)mode, O_CREAT | O_EXCL | O_WRONLY);
        if (err == 0)
            hm_call(req, "release", NULL, "(O&L)", hm_pypath, path, fh);
    } else if (err == 0)
        err = hm_call(req, "mknod", NULL, "(O&IK)", hm_pypath, path, (unsigned)mode, (unsigned long long)rdev);
    reply_made(req, err, parent, name, path);
}

void hm_py_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    char path[HM_PATH];
    int err = child_path(req, parent, name, path);
    if (err == 0)
        err = hm_call(req, "mkdir", NULL, "(O&I)", hm_pypath, path, (unsigned)mode);
    reply_made(req, err, parent, name, path);
}

void hm_py_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    char path[HM_PATH];
    int err = child_path(req, parent, name, path);
    if (err == 0)
        err = hm_call(req, "symlink", NULL, "(O&O&)", hm_pypath, path, hm_pypath, link);
    reply_made(req, err, parent, name, path);
}

void hm_py_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    char old[HM_PATH], path[HM_PATH];
    const char *oldpath;
    int err = named_path(req, ino, old, &oldpath);
    if (err == 0)
        err = child_path(req, newparent, newname, path);
    if (err == 0)
        err = hm_call(req, "link", NULL, "(O&O&)", hm_pypath, path, hm_pypath, oldpath);
    reply_made(req, err, newparent, newname, path);
}

/* The table's update after an unlink or rmdir (run at the queue hook or after the call). */
static void removed(struct hm_engine *e, struct hm_pending *p)
{
    if (!p->have_src)
        return;
    hm_table_unlinked(&e->table, p->parent, p->name, p->src.st_dev, p->src.st_ino);
    keep_a_name(e, &p->src);
}

static void remove_entry(fuse_req_t req, fuse_ino_t parent, const char *name, const char *method)
{
    struct hm_engine *e = hm_engine_of(req);
    char path[HM_PATH];
    struct hm_pending pending = {.apply = removed, .parent = parent, .name = name};
    int err = child_path(req, parent, name, path);
    pending.have_src = err == 0 && fstatat(e->root_fd, hm_rel(path), &pending.src, AT_SYMLINK_NOFOLLOW) == 0;
    hm_names.pending = &pending;
    if (err == 0)
        err = hm_call(req, method, NULL, "(O&)", hm_pypath, path);
    hm_names_release(err == 0);   /* the table's update, if the queue hook did not run it */
    reply_status(req, err);
}

void hm_py_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_entry(req, parent, name, "unlink");
}

void hm_py_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_entry(req, parent, name, "rmdir");
}

/* The table's update after a rename (run at the queue hook or after the call). */
static void renamed(struct hm_engine *e, struct hm_pending *p)
{
    if (!p->have_src)
        return;
    hm_table_renamed(&e->table, p->parent, p->name, p->newparent, p->newname, &p->src, &p->dst, p->have_dst,
                     (p->flags & RENAME_EXCHANGE) != 0);
    if (p->have_dst && !(p->flags & RENAME_EXCHANGE))
        keep_a_name(e, &p->dst);
}

void hm_py_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags)
{
    struct hm_engine *e = hm_engine_of(req);
    char old[HM_PATH], new[HM_PATH];
    struct hm_pending pending = {.apply = renamed, .parent = parent, .name = name, .newparent = newparent,
                                 .newname = newname, .flags = flags};
    int err = child_path(req, parent, name, old);
    if (err == 0)
        err = child_path(req, newparent, newname, new);
    pending.have_src = err == 0 && fstatat(e->root_fd, hm_rel(old), &pending.src, AT_SYMLINK_NOFOLLOW) == 0;
    pending.have_dst = err == 0 && fstatat(e->root_fd, hm_rel(new), &pending.dst, AT_SYMLINK_NOFOLLOW) == 0;
    hm_names.pending = &pending;
    if (err == 0)
        err = hm_call(req, "rename", NULL, "(O&O&I)", hm_pypath, old, hm_pypath, new, flags);
    hm_names_release(err == 0);   /* the table's update, if the queue hook did not run it */
    reply_status(req, err);
}

void hm_py_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
    char buf[HM_PATH];
    const char *path;
    int err = named_path(req, ino, buf, &path);
    if (err == 0)
        err = hm_call(req, "setxattr", NULL, "(O&O&y#i)", hm_pypath, path, hm_pypath, name, value, (Py_ssize_t)size, flags);
    reply_status(req, err);
}

void hm_py_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    char buf[HM_PATH];
    const char *path;
    int err = named_path(req, ino, buf, &path);
    if (err == 0)
        err = hm_call(req, "removexattr", NULL, "(O&O&)", hm_pypath, path, hm_pypath, name);
    reply_status(req, err);
}

void hm_py_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi)
{
    char buf[HM_PATH];
    const char *path;
    int err = hm_path_or_none(req, ino, buf, &path);
    if (err == 0)
        err = hm_call(req, "fallocate", NULL, "(O&iLLK)", hm_pypath, path, mode, (long long)offset,
                   (long long)length, fi->fh);
    reply_status(req, err);
}

void hm_py_init(struct hm_engine *e)
{
    if (e->on_init == NULL)
        return;
    hm_gil_enter();
    PyObject *r = PyObject_CallNoArgs(e->on_init);
    if (r == NULL)
        failed(e, "init");
    Py_XDECREF(r);
    hm_gil_leave();
}
