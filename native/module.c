/* CPython glue of the apply core: hamirror.link._native.Applier(root_fd).
 *
 * apply(op, ints, path, times, data) takes the fields protocol.decode() already validated,
 * converts them, and runs hm_apply() without the GIL (an fsync may take milliseconds; the
 * receiver's other threads keep running). A lock keeps two threads off one core at a time.
 * Errors become OSError(errno, message), as the Python applier raises.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdio.h>

#include "hm_apply.h"

typedef struct {
    PyObject_HEAD
    struct hm_applier *core;
    PyThread_type_lock lock;
} ApplierObject;

static int Applier_init(ApplierObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"root_fd", NULL};
    int root_fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &root_fd))
        return -1;
    if (self->core != NULL)
        hm_free(self->core);
    self->core = hm_new(root_fd);
    if (self->core == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (self->lock == NULL && (self->lock = PyThread_allocate_lock()) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Applier_dealloc(ApplierObject *self)
{
    hm_free(self->core);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int closed(ApplierObject *self)
{
    if (self->core != NULL)
        return 0;
    PyErr_SetString(PyExc_ValueError, "the native applier is closed");
    return 1;
}

/* bytes -> (pointer, length), borrowed from an object the caller keeps alive. */
static int as_path(PyObject *obj, const char **ptr, size_t *len)
{
    Py_ssize_t n;
    char *p;
    if (PyBytes_AsStringAndSize(obj, &p, &n) != 0)   /* TypeError for anything but bytes */
        return -1;
    *ptr = p;
    *len = (size_t)n;
    return 0;
}

static int as_int64(PyObject *obj, int64_t *out)
{
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_ints(PyObject *ints, struct hm_op *op)
{
    if (!PyTuple_Check(ints) || PyTuple_GET_SIZE(ints) > 4) {
        PyErr_SetString(PyExc_ValueError, "ints: a tuple of at most 4 integers");
        return -1;
    }
    op->n_ints = (int)PyTuple_GET_SIZE(ints);
    for (int i = 0; i < op->n_ints; i++)
        if (as_int64(PyTuple_GET_ITEM(ints, i), &op->ints[i]) != 0)
            return -1;
    return 0;
}

static int parse_times(PyObject *times, struct hm_op *op, struct hm_time *out)
{
    if (!PyTuple_Check(times) || PyTuple_GET_SIZE(times) > HM_MAX_TIMES) {
        PyErr_SetString(PyExc_ValueError, "times: a tuple of at most 4 (path, atime, mtime)");
        return -1;
    }
    op->n_times = (int)PyTuple_GET_SIZE(times);
    for (int i = 0; i < op->n_times; i++) {
        PyObject *t = PyTuple_GET_ITEM(times, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
            PyErr_SetString(PyExc_ValueError, "times: a tuple of at most 4 (path, atime, mtime)");
            return -1;
        }
        if (as_path(PyTuple_GET_ITEM(t, 0), &out[i].path, &out[i].len) != 0
            || as_int64(PyTuple_GET_ITEM(t, 1), &out[i].atime_ns) != 0
            || as_int64(PyTuple_GET_ITEM(t, 2), &out[i].mtime_ns) != 0)
            return -1;
    }
    op->times = out;
    return 0;
}

static PyObject *Applier_apply(ApplierObject *self, PyObject *args)
{
    int opcode;
    PyObject *ints, *path, *times, *data;
    if (!PyArg_ParseTuple(args, "iOOOO:apply", &opcode, &ints, &path, &times, &data) || closed(self))
        return NULL;
    struct hm_op op = {.op = opcode};
    struct hm_time tv[HM_MAX_TIMES];
    if (parse_ints(ints, &op) != 0 || as_path(path, &op.path, &op.path_len) != 0
        || parse_times(times, &op, tv) != 0)
        return NULL;
    Py_buffer view = {0};
    int have_view = 0;
    if (data != Py_None) {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) != 0)
            return NULL;
        have_view = 1;
        op.data = view.buf;
        op.data_len = (size_t)view.len;
    }
    char err[256];
    int rc, writeback = 0;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    if (self->core != NULL) { /* not closed by another thread meanwhile */
        rc = hm_apply(self->core, &op, err, sizeof err);
        writeback = hm_writeback_pending(self->core);
    } else {
        rc = EBADF;
        snprintf(err, sizeof err, "the native applier is closed");
    }
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    if (have_view)
        PyBuffer_Release(&view);
    if (rc != 0) {
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "is", rc, err);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    return PyBool_FromLong(writeback);
}

static PyObject *Applier_supported(PyObject *Py_UNUSED(cls), PyObject *args)
{
    int opcode;
    PyObject *ints;
    if (!PyArg_ParseTuple(args, "iO:supported", &opcode, &ints))
        return NULL;
    struct hm_op op = {.op = opcode};
    if (parse_ints(ints, &op) != 0)
        return NULL;
    return PyBool_FromLong(hm_supported(opcode, op.ints, op.n_ints));
}

/* Run fn on the core under its lock, without the GIL (it may close files or start I/O). */
static PyObject *run_locked(ApplierObject *self, void (*fn)(struct hm_applier *))
{
    if (closed(self))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    if (self->core != NULL)
        fn(self->core);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Applier_forget(ApplierObject *self, PyObject *Py_UNUSED(ignored))
{
    return run_locked(self, hm_forget);
}

static PyObject *Applier_start_writeback(ApplierObject *self, PyObject *Py_UNUSED(ignored))
{
    return run_locked(self, hm_start_writeback);
}

static PyObject *Applier_cached(ApplierObject *self, PyObject *Py_UNUSED(ignored))
{
    if (closed(self))
        return NULL;
    return PyLong_FromLong(hm_cached(self->core));
}

static PyObject *Applier_close(ApplierObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->core != NULL) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        hm_free(self->core);
        self->core = NULL;
        PyThread_release_lock(self->lock);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyMethodDef Applier_methods[] = {
    {"apply", (PyCFunction)Applier_apply, METH_VARARGS,
     "apply(op, ints, path, times, data): apply one decoded operation; OSError if refused.\n"
     "True when it left a writeback for start_writeback() (so the caller calls that only then)."},
    {"supported", (PyCFunction)(void (*)(void))Applier_supported, METH_VARARGS | METH_STATIC,
     "supported(op, ints): True if the native core applies this operation."},
    {"forget", (PyCFunction)Applier_forget, METH_NOARGS,
     "Close every kept descriptor (names changed behind the core)."},
    {"start_writeback", (PyCFunction)Applier_start_writeback, METH_NOARGS,
     "Start the writeback a write (large, or to a synced file) left for after its reply."},
    {"cached", (PyCFunction)Applier_cached, METH_NOARGS, "Descriptors kept open."},
    {"close", (PyCFunction)Applier_close, METH_NOARGS, "Close the core and its descriptors."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ApplierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hamirror.link._native.Applier",
    .tp_basicsize = sizeof(ApplierObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The receiver's apply core: directory and file descriptors kept between messages.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Applier_init,
    .tp_dealloc = (destructor)Applier_dealloc,
    .tp_methods = Applier_methods,
};

/* A bytearray of ``size`` bytes whose content is whatever the allocator gave: for a buffer that
 * is written whole before anything reads it (a record sealed into it, a record received into it).
 * bytearray(size) zeroes it first, a memset of a MiB for every large write (docs/performance.md,
 * "Link buffers not zeroed"). */
static PyObject *native_unfilled(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "unfilled: a negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

static PyMethodDef native_functions[] = {
    {"unfilled", native_unfilled, METH_O,
     "unfilled(size) -> bytearray of size bytes, not zeroed: the caller writes every byte before reading any."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hamirror.link._native",
    .m_doc = "The receiver's apply core in C (native/, docs/native.md).",
    .m_size = -1,
    .m_methods = native_functions,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&ApplierType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ApplierType);
    if (PyModule_AddObject(m, "Applier", (PyObject *)&ApplierType) < 0) {
        Py_DECREF(&ApplierType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
