/* edge._sendloop: the fan-out's send loop over the members' sockets, in C.
 *
 * Why: at moderate rates every delivery is one frame written alone, and the
 * interpreter between two sends (about 1.1 us a delivery) is both its own
 * cost and what lets a reading client fall asleep between sends, whose
 * wake-up the sender then pays in the kernel (docs/BENCHMARKS.md, "A send
 * loop in C"). This loop sends the frame straight to each member's socket
 * with send(2), without the interpreter or the transport between sends.
 *
 * It is an optimisation of exactly one case, and hands everything else back:
 * a member is sent to here only when
 *   - it has a socket (``conn.fd >= 0``: a plain TCP transport, never TLS;
 *     edge/ws.py decides), it is not closed and not in a grace period
 *     (``conn.closed`` false, ``conn.over_since`` None),
 *   - its transport holds nothing unsent (``stream.get_write_buffer_size()``
 *     is 0: so a direct send cannot overtake bytes the transport queued),
 *   - its transport is not closing (``stream.is_closing()`` false: so the fd
 *     is still this connection's, never a number the kernel reused), and
 *   - its variant's frame (``frame_for(variant)``) is bytes.
 * Every other member is returned in ``rest``, untouched, for the Python loop
 * (edge/fanout.py ``Hub._write``), which decides as before. So is a member
 * whose send wrote nothing (EAGAIN, or an error the transport will then meet
 * and handle itself). A send that wrote part of the frame hands the rest to
 * the transport's ``write`` at once, which queues it in order (its buffer
 * was empty), so the stream never carries a torn frame.
 *
 * write_members(members, frame_for) -> (sent, rest, failed, error)
 *   sent    members written (in full, or the rest queued in the transport)
 *   rest    list of members not touched
 *   failed  members whose transport raised while the rest of a partly sent
 *           frame was handed to it: ``conn._failed(exc)`` was called
 *   error   the exception ``frame_for`` raised (the loop stopped there), or
 *           None
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/types.h>

static PyObject *s_write, *s__failed; /* interned method names */
static PyObject *zero;

/* The exception being raised, as one object (and cleared). */
static PyObject *take_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

#define CACHE 4

typedef struct {
    PyObject *variant[CACHE]; /* borrowed from the members, compared by identity */
    PyObject *frame[CACHE];   /* owned */
    int n;
} frame_cache;

static void cache_clear(frame_cache *c) {
    for (int i = 0; i < c->n; i++) Py_XDECREF(c->frame[i]);
    c->n = 0;
}

/* The frame of ``variant`` (a new reference, possibly Py_None), or NULL with
 * an exception set when frame_for raised. */
static PyObject *frame_of(frame_cache *c, PyObject *frame_for, PyObject *variant) {
    for (int i = 0; i < c->n; i++) {
        if (c->variant[i] == variant) {
            Py_INCREF(c->frame[i]);
            return c->frame[i];
        }
    }
    PyObject *frame = PyObject_CallOneArg(frame_for, variant);
    if (frame == NULL) return NULL;
    if (c->n < CACHE) {
        c->variant[c->n] = variant;
        Py_INCREF(frame);
        c->frame[c->n++] = frame;
    }
    return frame;
}

/* The members' attributes, read the way the interpreter would
 * (PyObject_GetAttr), or, for the one class they all are (edge.fanout.Conn,
 * whose __slots__ these are), straight from the slot: the interpreter's own
 * lookup is a third of this loop's own cost. The class is checked for every
 * member, so any other object still takes the general road. */
enum { A_FD, A_CLOSED, A_OVER_SINCE, A_STREAM, A_VARIANT, A_LAST_BUFFERED, N_ATTRS };
static PyObject *attr_names[N_ATTRS];
static PyTypeObject *slots_type; /* owned; NULL: not looked up yet */
static Py_ssize_t slot_offset[N_ATTRS];
static int have_slots;

static void find_slots(PyTypeObject *type) {
    Py_XDECREF(slots_type);
    Py_INCREF(type);
    slots_type = type;
    have_slots = 1;
    for (int i = 0; i < N_ATTRS; i++) {
        PyObject *d = _PyType_Lookup(type, attr_names[i]); /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            have_slots = 0;
            return;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            have_slots = 0;
            return;
        }
        slot_offset[i] = m->offset;
    }
}

/* A new reference, or NULL (with or without an exception set) when unset. */
static inline PyObject *get(PyObject *conn, int i) {
    if (Py_TYPE(conn) == slots_type && have_slots) {
        PyObject *v = *(PyObject **)((char *)conn + slot_offset[i]);
        Py_XINCREF(v);
        return v;
    }
    return PyObject_GetAttr(conn, attr_names[i]);
}

static inline int set_last_buffered(PyObject *conn, PyObject *value) {
    if (Py_TYPE(conn) == slots_type && have_slots) {
        PyObject **slot = (PyObject **)((char *)conn + slot_offset[A_LAST_BUFFERED]);
        PyObject *old = *slot;
        Py_INCREF(value);
        *slot = value;
        Py_XDECREF(old);
        return 0;
    }
    return PyObject_SetAttr(conn, attr_names[A_LAST_BUFFERED], value);
}

/* The stream's two no-argument methods, called through their method
 * descriptors, looked up once for the stream's class, when they are plain
 * method descriptors (uvloop's transports); else by name (asyncio's). */
enum { M_BUFFERED, M_CLOSING, N_METHODS };
static PyObject *method_names[N_METHODS];
static PyTypeObject *stream_type;          /* owned */
static PyObject *stream_method[N_METHODS]; /* owned; NULL: call by name */

static PyObject *call0(PyObject *stream, int i) {
    if (Py_TYPE(stream) != stream_type) {
        Py_XDECREF(stream_type);
        Py_INCREF(Py_TYPE(stream));
        stream_type = Py_TYPE(stream);
        for (int k = 0; k < N_METHODS; k++) {
            PyObject *m = _PyType_Lookup(stream_type, method_names[k]); /* borrowed */
            Py_XDECREF(stream_method[k]);
            stream_method[k] = m != NULL && Py_IS_TYPE(m, &PyMethodDescr_Type) ? Py_NewRef(m)
                                                                               : NULL;
        }
    }
    if (stream_method[i] != NULL) return PyObject_Vectorcall(stream_method[i], &stream, 1, NULL);
    return PyObject_CallMethodNoArgs(stream, method_names[i]);
}

/* -1: not ours to send to (hand back); else the fd, with the conn's stream
 * in *stream (a new reference) and its variant in *variant (a new reference). */
static int eligible(PyObject *conn, PyObject **stream, PyObject **variant) {
    *stream = NULL;
    *variant = NULL;
    if (Py_TYPE(conn) != slots_type) find_slots(Py_TYPE(conn));
    PyObject *v = get(conn, A_FD);
    if (v == NULL) goto clear;
    long fd = PyLong_AsLong(v);
    Py_DECREF(v);
    if (fd < 0 || fd > INT_MAX) goto clear;
    v = get(conn, A_CLOSED);
    if (v == NULL) goto clear;
    int closed = v != Py_False;
    Py_DECREF(v);
    if (closed) return -1;
    v = get(conn, A_OVER_SINCE);
    if (v == NULL) goto clear;
    int over = v != Py_None;
    Py_DECREF(v);
    if (over) return -1;
    PyObject *st = get(conn, A_STREAM);
    if (st == NULL) goto clear;
    v = call0(st, M_BUFFERED);
    if (v == NULL) {
        Py_DECREF(st);
        goto clear;
    }
    long size = PyLong_AsLong(v);
    Py_DECREF(v);
    if (size != 0) {
        Py_DECREF(st);
        goto clear;
    }
    v = call0(st, M_CLOSING);
    if (v == NULL) {
        Py_DECREF(st);
        goto clear;
    }
    int closing = v != Py_False;
    Py_DECREF(v);
    if (closing) {
        Py_DECREF(st);
        return -1;
    }
    PyObject *var = get(conn, A_VARIANT);
    if (var == NULL) {
        Py_DECREF(st);
        goto clear;
    }
    *stream = st;
    *variant = var;
    return (int)fd;
clear:
    /* Whatever raised is the Python loop's to meet again and handle. */
    PyErr_Clear();
    return -1;
}

/* The rest of a partly sent frame, to the transport; 0, or -1 when it raised
 * (then conn._failed(exc) was called and conn is to be reported failed). */
static int write_rest(PyObject *conn, PyObject *stream, const char *buf, Py_ssize_t len) {
    PyObject *rest = PyBytes_FromStringAndSize(buf, len);
    if (rest == NULL) goto failed;
    PyObject *r = PyObject_CallMethodOneArg(stream, s_write, rest);
    Py_DECREF(rest);
    if (r == NULL) goto failed;
    Py_DECREF(r);
    r = call0(stream, M_BUFFERED);
    if (r == NULL) goto failed;
    int bad = set_last_buffered(conn, r);
    Py_DECREF(r);
    if (bad) goto failed;
    return 0;
failed:;
    PyObject *exc = take_exception();
    PyObject *ignored = PyObject_CallMethodOneArg(conn, s__failed, exc ? exc : Py_None);
    Py_XDECREF(ignored);
    Py_XDECREF(exc);
    PyErr_Clear();
    return -1;
}

static PyObject *write_members(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "write_members(members, frame_for)");
        return NULL;
    }
    PyObject *frame_for = args[1];
    PyObject *it = PyObject_GetIter(args[0]);
    if (it == NULL) return NULL;
    PyObject *rest = PyList_New(0);
    PyObject *failed = PyList_New(0);
    if (rest == NULL || failed == NULL) goto oom;
    frame_cache cache = {.n = 0};
    Py_ssize_t sent = 0;
    PyObject *error = NULL;
    PyObject *conn;
    while ((conn = PyIter_Next(it)) != NULL) {
        PyObject *stream, *variant;
        int fd = eligible(conn, &stream, &variant);
        if (fd < 0) {
            int bad = PyList_Append(rest, conn);
            Py_DECREF(conn);
            if (bad) goto oom_cache;
            continue;
        }
        PyObject *frame = frame_of(&cache, frame_for, variant);
        Py_DECREF(variant);
        if (frame == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) { /* KeyboardInterrupt... */
                Py_DECREF(stream);
                Py_DECREF(conn);
                goto oom_cache;
            }
            /* An encoder error: the room's, not this member's (Hub._write). */
            error = take_exception();
            Py_DECREF(stream);
            Py_DECREF(conn);
            break;
        }
        if (!PyBytes_CheckExact(frame)) { /* None: shed; the Python loop counts it */
            Py_DECREF(frame);
            Py_DECREF(stream);
            int bad = PyList_Append(rest, conn);
            Py_DECREF(conn);
            if (bad) goto oom_cache;
            continue;
        }
        const char *buf = PyBytes_AS_STRING(frame);
        Py_ssize_t len = PyBytes_GET_SIZE(frame);
        ssize_t n;
        do {
            n = send(fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        int bad = 0;
        if (n == len) {
            bad = set_last_buffered(conn, zero);
            sent++;
        } else if (n > 0) {
            if (write_rest(conn, stream, buf + n, len - n) == 0)
                sent++;
            else
                bad = PyList_Append(failed, conn);
        } else {
            /* Nothing written (EAGAIN, or an error the transport will meet). */
            bad = PyList_Append(rest, conn);
        }
        Py_DECREF(frame);
        Py_DECREF(stream);
        Py_DECREF(conn);
        if (bad) goto oom_cache;
    }
    if (error == NULL && PyErr_Occurred()) goto oom_cache; /* the iterator raised */
    cache_clear(&cache);
    Py_DECREF(it);
    PyObject *result = Py_BuildValue("(nNNN)", sent, rest, failed,
                                     error == NULL ? Py_NewRef(Py_None) : error);
    return result;
oom_cache:
    cache_clear(&cache);
oom:
    Py_XDECREF(rest);
    Py_XDECREF(failed);
    Py_DECREF(it);
    return NULL;
}

static PyMethodDef methods[] = {
    {"write_members", (PyCFunction)(void (*)(void))write_members, METH_FASTCALL,
     "write_members(members, frame_for) -> (sent, rest, failed, error)\n\n"
     "Send each keeping-up member its variant's frame straight to its socket; "
     "the others are returned untouched in rest (edge/_sendloop.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edge._sendloop",
    "The fan-out's send loop over the members' sockets (edge/_sendloop.c).", -1, methods,
};

#define INTERN(var, text)                                   \
    do {                                                    \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                    \
    } while (0)

PyMODINIT_FUNC PyInit__sendloop(void) {
    INTERN(attr_names[A_FD], "fd");
    INTERN(attr_names[A_CLOSED], "closed");
    INTERN(attr_names[A_OVER_SINCE], "over_since");
    INTERN(attr_names[A_STREAM], "stream");
    INTERN(attr_names[A_VARIANT], "variant");
    INTERN(attr_names[A_LAST_BUFFERED], "last_buffered");
    INTERN(method_names[M_BUFFERED], "get_write_buffer_size");
    INTERN(method_names[M_CLOSING], "is_closing");
    INTERN(s_write, "write");
    INTERN(s__failed, "_failed");
    if ((zero = PyLong_FromLong(0)) == NULL) return NULL;
    return PyModule_Create(&module);
}
