/* CPython glue of the request loop: the module hamirror.fs._lowlevel (docs/native.md).
 *
 * serve(ops, root_fd, mountpoint, options, writeback, max_background, max_threads, on_init,
 *       on_error, idle_threads, direct_writes, time_granularity_ns) mounts and serves until
 *       unmounted, with the GIL released while it waits; idle workers above idle_threads
 *       (default max_threads) exit with their buffer; direct_writes: write-only handles bypass
 *       the page cache (FOPEN_DIRECT_IO); time_granularity_ns: the file times' granularity the
 *       kernel keeps (0: its own, 1 ns);
 *       RuntimeError(message) when it cannot mount or the kernel lacks what barrier mode needs.
 * context() -> (uid, gid, pid) of the request the calling FUSE thread serves.
 * nodes() -> nodes the running loop holds (the root excepted): lookup counts must not leak.
 * killpriv_v2() -> whether the running loop negotiated FUSE_HANDLE_KILLPRIV_V2 (hm_killpriv.h).
 */
#include "hm_fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

static struct hm_engine *running;   /* for nodes(); one mount per process */

static PyObject *lowlevel_serve(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"ops", "root_fd", "mountpoint", "options", "writeback", "max_background",
                             "max_threads", "on_init", "on_error", "idle_threads", "direct_writes",
                             "time_granularity_ns", NULL};
    PyObject *ops, *on_init, *on_error;
    int root_fd, writeback, direct_writes = 0;
    unsigned max_background, max_threads, idle_threads = 0, time_granularity_ns = 0;
    const char *mountpoint, *options;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oissp|IIOOIpI", kwlist, &ops, &root_fd, &mountpoint, &options,
                                     &writeback, &max_background, &max_threads, &on_init, &on_error,
                                     &idle_threads, &direct_writes, &time_granularity_ns))
        return NULL;
    if (running != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a native FUSE loop already runs in this process");
        return NULL;
    }
    struct stat st;
    if (fstat(root_fd, &st) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    struct hm_engine *e = PyMem_RawCalloc(1, sizeof(*e));
    if (e == NULL)
        return PyErr_NoMemory();
    pthread_rwlockattr_t names_attr;
    pthread_rwlockattr_init(&names_attr);
    pthread_rwlockattr_setkind_np(&names_attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int names_failed = pthread_rwlock_init(&e->names, &names_attr);
    pthread_rwlockattr_destroy(&names_attr);
    if (names_failed != 0 || hm_table_init(&e->table, &st) != 0) {
        if (names_failed == 0)
            pthread_rwlock_destroy(&e->names);
        PyMem_RawFree(e);
        return PyErr_NoMemory();
    }
    e->root_fd = root_fd;
    e->writeback = writeback;
    e->direct_writes = direct_writes && !writeback;
    e->time_granularity_ns = time_granularity_ns;
    e->max_background = max_background;
    e->ops = ops;
    PyObject *flush = PyObject_GetAttrString(ops, "flush_needed");   /* Python's decision, read once */
    e->flush = flush == NULL || PyObject_IsTrue(flush) != 0;
    Py_XDECREF(flush);
    PyObject *release = PyObject_GetAttrString(ops, "release_needed");
    e->release = release == NULL || PyObject_IsTrue(release) != 0;
    Py_XDECREF(release);
    PyErr_Clear();
    e->on_init = on_init == Py_None ? NULL : on_init;
    e->on_error = on_error == Py_None ? NULL : on_error;
    Py_INCREF(ops);
    Py_XINCREF(e->on_init);
    Py_XINCREF(e->on_error);
    running = e;
    int r;
    Py_BEGIN_ALLOW_THREADS
    max_threads = max_threads ? max_threads : 10;
    r = hm_serve(e, mountpoint, options, max_threads, idle_threads ? idle_threads : max_threads);
    Py_END_ALLOW_THREADS
    running = NULL;
    hm_table_destroy(&e->table);
    pthread_rwlock_destroy(&e->names);
    Py_DECREF(ops);
    Py_XDECREF(e->on_init);
    Py_XDECREF(e->on_error);
    PyObject *result = NULL;
    if (r != 0)
        PyErr_SetString(PyExc_RuntimeError, e->error);
    else
        result = Py_NewRef(Py_None);
    PyMem_RawFree(e);
    return result;
}

static PyObject *lowlevel_context(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (hm_current_req == NULL)
        return Py_BuildValue("(iii)", 0, 0, 0);   /* as fuse_get_context() outside a request */
    const struct fuse_ctx *ctx = fuse_req_ctx(hm_current_req);
    return Py_BuildValue("(IIi)", (unsigned)ctx->uid, (unsigned)ctx->gid, (int)ctx->pid);
}

static PyObject *lowlevel_nodes(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromSize_t(running != NULL ? hm_table_count(&running->table) : 0);
}

static PyObject *lowlevel_killpriv_v2(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(running != NULL && hm_killpriv_active(&running->killpriv));
}

/* The replicator's hook (Replicator.on_queued): this thread's change is queued for the peer (or
 * recorded), so the namespace lock it holds may go (hm_fuse.h). Anywhere else, a no-op. */
static PyObject *lowlevel_queued(PyObject *self, PyObject *arg)
{
    (void)self;
    int ok = PyObject_IsTrue(arg);
    if (ok < 0)
        return NULL;
    if (hm_names.engine != NULL && hm_names.early) {
        Py_BEGIN_ALLOW_THREADS
        hm_names_release(ok);   /* a rename's table update may search the tree: without the GIL */
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))lowlevel_serve, METH_VARARGS | METH_KEYWORDS,
     "Mount and serve until unmounted (the GIL is released while waiting)."},
    {"context", lowlevel_context, METH_NOARGS, "(uid, gid, pid) of the request this thread serves."},
    {"nodes", lowlevel_nodes, METH_NOARGS, "Number of nodes the running loop holds."},
    {"killpriv_v2", lowlevel_killpriv_v2, METH_NOARGS,
     "Whether the running loop negotiated FUSE_HANDLE_KILLPRIV_V2 (the kills on write are its own)."},
    {"queued", lowlevel_queued, METH_O, "queued(ok): this thread's change is queued; its path lock may go."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lowlevel",
    "The FUSE request loop on libfuse's low-level API (docs/native.md).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__lowlevel(void)
{
    return PyModule_Create(&module);
}
