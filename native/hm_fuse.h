/* The FUSE request loop on libfuse's low-level API (docs/native.md, "The request loop").
 *
 * hm_fuse.c: the session, the loop and the read-only requests, served in C without the GIL.
 * hm_fuse_py.c: the requests that change something, handed to the Python ``Interception``
 * methods (hamirror/fs/operations.py); the inode table follows what they change.
 * hm_fuse_module.c: the module hamirror.fs._lowlevel (serve, context).
 */
#ifndef HM_FUSE_H
#define HM_FUSE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "hm_inodes.h"
#include "hm_killpriv.h"

#define HM_CONFLICT_DIR ".hamirror-conflicts"   /* hamirror/link/protocol.py CONFLICT_DIR */
#define HM_TIMEOUT 1.0                          /* entry and attribute timeouts, as libfuse's high-level default */
#define HM_PATH (PATH_MAX + 2)                  /* "/" + a relative path */

struct hm_engine {
    int root_fd;
    struct hm_table table;
    /* The namespace lock (docs/native.md, "Paths and renames"): shared by every request that
     * turns a node into a path and uses it, exclusive for rename, unlink and rmdir, which change
     * what paths mean. Writers are preferred: a rename waits for the requests in flight only. */
    pthread_rwlock_t names;
    struct fuse_session *se;
    PyObject *ops;        /* the Interception */
    PyObject *on_init;    /* called once the kernel's INIT is answered (the mount is up) */
    PyObject *on_error;   /* on_error(operation, exception) for anything but an OSError */
    int writeback;        /* barrier mode: the kernel's writeback cache */
    int flush;            /* ops.flush_needed: close() reaches Python. When not, libfuse has no flush
                           * op and answers the first FLUSH ENOSYS: the kernel sends no more. */
    int release;          /* ops.release_needed: a close's RELEASE reaches Python (else closed here) */
    int direct_writes;    /* a write-only handle bypasses the kernel's page cache (FOPEN_DIRECT_IO) */
    unsigned time_granularity_ns;   /* the file times the kernel keeps (init's time_gran); 0: its own */
    unsigned max_background;
    struct hm_killpriv killpriv;   /* FUSE_HANDLE_KILLPRIV_V2 (hm_killpriv.h) */
    char error[256];      /* why init stopped the session */
};

extern const struct fuse_lowlevel_ops hm_ops;

/* The request being served by this thread, for _lowlevel.context(). */
extern __thread fuse_req_t hm_current_req;

/* The namespace lock as this thread holds it (docs/native.md, "Paths and renames"). A request
 * holds it from its path's computation until its change is queued for the peer (the replicator's
 * hook, _lowlevel.queued) or until it replied, whichever comes first: messages are applied in
 * queue order, so once queued the change is ordered before any later rename. A rename, unlink or
 * rmdir updates the inode table at that same moment (``pending``), before anyone can compute a
 * path from the table again. */
struct hm_pending {
    void (*apply)(struct hm_engine *e, struct hm_pending *p);   /* the table's update, run once */
    uint64_t parent, newparent;
    const char *name, *newname;
    struct stat src, dst;
    int have_src, have_dst;
    unsigned flags;
};

struct hm_names_held {
    struct hm_engine *engine;   /* NULL: this thread holds nothing */
    int early;                  /* the hook may release it before the request replies */
    struct hm_pending *pending;
};
extern __thread struct hm_names_held hm_names;

/* Release this thread's hold (if any), running its pending table update first when ``ok``. */
void hm_names_release(int ok);

static inline struct hm_engine *hm_engine_of(fuse_req_t req)
{
    return (struct hm_engine *)fuse_req_userdata(req);
}

/* "/a/b" -> "a/b", "/" -> ".": the form for *at calls on root_fd. */
static inline const char *hm_rel(const char *path)
{
    return path[1] != '\0' ? path + 1 : ".";
}

/* Reply an entry for ``path`` just made or looked up in ``parent``/``name``: fstatat, learn,
 * reply (or undo the reference when the kernel did not take the reply). */
void hm_reply_entry(fuse_req_t req, uint64_t parent, const char *name, const char *path);
/* A regular file's times as the kernel is answered with them: floored to time_granularity_ns when
 * the mount has one (barrier mode). Why: the kernel takes the times it is given as they are, and
 * stamps the next write with the current time truncated to its granularity, which within the
 * same 10 ms is earlier than a time it was given to the ns: the mtime would go back
 * (hamirror/fs/stamps.py, granular_times, gives a new file's copies the same floor). */
void hm_kernel_times(const struct hm_engine *e, struct stat *st);

/* A name of the file (dev, ino) anywhere below the root, "/a/b" into buf (HM_PATH bytes): 0 or
 * -ENOENT. A whole-tree walk, for the rare file whose every known name went while it has others. */
int hm_find_name(struct hm_engine *e, dev_t dev, ino_t ino, char *buf);

/* hm_fuse_py.c */
void hm_py_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hm_py_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi);
void hm_py_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi);
void hm_py_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hm_py_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hm_py_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void hm_py_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void hm_py_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi);
void hm_py_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void hm_py_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void hm_py_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void hm_py_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void hm_py_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void hm_py_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void hm_py_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags);
void hm_py_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags);
void hm_py_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void hm_py_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi);
void hm_py_init(struct hm_engine *e);

/* hm_fuse_py.c's helpers, for hm_setattr.c: the GIL kept per thread (taken for a request, with
 * the request set for ``context()``: hm_python_enter / hm_python_leave); ops.<method>(args) with the
 * GIL held, or taken for the call (0, the int result in *out if asked, or an errno); the "O&"
 * converters of a path (None for NULL) and of a handle; a node's path, NULL if it has no name. */
void hm_gil_enter(void);
void hm_gil_leave(void);
struct hm_engine *hm_python_enter(fuse_req_t req);
void hm_python_leave(void);
int hm_call_held(struct hm_engine *e, const char *method, long long *out, const char *fmt, ...);
int hm_call(fuse_req_t req, const char *method, long long *out, const char *fmt, ...);
PyObject *hm_pypath(void *p);
PyObject *hm_pyfh(void *fi);
int hm_path_or_none(fuse_req_t req, fuse_ino_t ino, char *buf, const char **path);

/* hm_setattr.c: apply the kernel's mtime deferred on a node (GIL held): sent under ``path``, or
 * ours only when NULL (unlinked while open, through ``fi``). 0 or an errno. */
int hm_apply_mtime_held(struct hm_engine *e, const char *path, const struct fuse_file_info *fi,
                        const struct timespec *mtime);

/* hm_fuse.c: run the session until unmounted; 0, or -1 with e->error set. GIL released. */
int hm_serve(struct hm_engine *e, const char *mountpoint, const char *options, unsigned max_threads,
             unsigned idle_threads);

#endif
