/* Optional C accelerator for ws4web: the per-message path of RFC 6455.
 *
 * Theory of operation
 * -------------------
 * The pure-Python code (ws4web/frames.py, ws4web/protocol.py) is the reference and
 * is complete on its own; this module only makes the common case cheaper, and is
 * never required (setup.py builds it when a compiler is present; the environment
 * variable WS4WEB_NO_SPEEDUPS=1 makes ws4web ignore it).
 *
 * parse_frames() takes, in one call, every complete frame at the front of the
 * protocol's receive buffer that is *simple* and *well-formed*:
 *
 *   - a whole data message in one frame (TEXT or BINARY with FIN set), text
 *     checked to be valid UTF-8 (RFC 6455 §5.6, §8.1);
 *   - a PONG, and on the server a PING, whose answer (an unmasked PONG with the
 *     same payload, §5.5.2, §5.5.3) it appends to the protocol's writes;
 *   - no RSV bit (extensions own them and transform frames: Python's job, §5.2);
 *   - masked exactly when the side requires it (§5.1, §5.3);
 *   - within the size limit given by the caller, checked on the header before
 *     the payload is looked at (§10.4).
 *
 * It stops at the first frame it does not handle, leaving the buffer at the start
 * of that frame, and says why (a status code). Everything else - fragments and
 * continuation frames (§5.4), CLOSE (§5.5.1), a PING on the client (its PONG must
 * be masked), reserved opcodes and RSV bits, wrong masking, oversize or fragmented
 * control frames (§5.5), 64-bit lengths with the top bit set (§5.2), frames over
 * the limit, invalid UTF-8 - is parsed by the Python code, which then raises the
 * error and picks the close code exactly as without this module. So this file
 * never decides a close code: it can only produce the events the Python parser
 * would have produced, or leave the bytes to it. tests/test_speedups.py checks
 * that claim by feeding the same bytes to both.
 *
 * frame_wire() is frames.frame_wire in one call: the header and the payload
 * (masked with a fresh key on the client side) as one buffer, or as two when the
 * payload is large, so that a big payload is never copied only to prepend a header.
 *
 * apply_mask() XORs a payload with a 4-byte mask key (§5.3).
 *
 * Safety: every read from the buffer is bounds-checked against its length first;
 * multi-byte fields are read bytewise or with memcpy (no unaligned access); the
 * buffer is exported (locked against resizing) while it is read, and only
 * shortened after the export is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

/* parse_frames() status codes; ws4web/protocol.py mirrors them. */
#define STATUS_EMPTY 0     /* the buffer is consumed */
#define STATUS_PARTIAL 1   /* a frame has begun, its rules hold so far: wait for bytes */
#define STATUS_PYTHON 2    /* the frame at the front is left to the Python parser */
#define STATUS_BUDGET 3    /* as many frames as the caller allowed were taken */

/* Payloads up to this size are sent in one buffer with their header (frames.py _JOIN_LIMIT). */
#define JOIN_LIMIT 16384

/* Set by configure(): the Frame class, the Opcode members, os.urandom. */
static PyObject *frame_type = NULL;
static PyObject *opcode_members[16];
static PyObject *urandom = NULL;
static PyObject *str_opcode, *str_data, *str_fin, *str_rsv1, *str_rsv2, *str_rsv3;

/* -- masking (RFC 6455 §5.3) -------------------------------------------------------- */

static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t n, const unsigned char mask[4])
{
    /* Work on 8-byte words: the mask repeats every 4 bytes, so a 64-bit key made of
     * the mask twice lines up with every 8-byte offset from the start. The loop has
     * no dependencies between iterations, which lets the compiler vectorize it;
     * memcpy keeps unaligned access defined behaviour. */
    uint64_t key;
    unsigned char key_bytes[8];
    Py_ssize_t i = 0;

    memcpy(key_bytes, mask, 4);
    memcpy(key_bytes + 4, mask, 4);
    memcpy(&key, key_bytes, 8);

    for (; i + 32 <= n; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        memcpy(&c, src + i + 16, 8);
        memcpy(&d, src + i + 24, 8);
        a ^= key; b ^= key; c ^= key; d ^= key;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
        memcpy(dst + i + 16, &c, 8);
        memcpy(dst + i + 24, &d, 8);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t a;
        memcpy(&a, src + i, 8);
        a ^= key;
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ mask[i & 3];
    }
}

/* XOR n bytes; large payloads let other threads run (the source stays exported). */
static void
xor_mask_maybe_nogil(const unsigned char *src, unsigned char *dst, Py_ssize_t n, const unsigned char mask[4])
{
    if (n >= 65536) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(src, dst, n, mask);
        Py_END_ALLOW_THREADS
    } else {
        xor_mask(src, dst, n, mask);
    }
}

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer data, mask;
    PyObject *result;

    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask)) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL && data.len > 0) {
        xor_mask_maybe_nogil((const unsigned char *)data.buf, (unsigned char *)PyBytes_AS_STRING(result), data.len,
                             (const unsigned char *)mask.buf);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

/* -- UTF-8 (RFC 3629 §4, as RFC 6455 §8.1 requires of text) ------------------------- */

/* Whether s[0:n] is valid UTF-8: the well-formed byte sequences of RFC 3629 §4
 * (no overlong forms, no surrogates U+D800-DFFF, nothing above U+10FFFF), which is
 * exactly what Python's strict bytes.decode() accepts. */
static int
valid_utf8(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        /* ASCII runs 8 bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & UINT64_C(0x8080808080808080)) {
                break;
            }
            i += 8;
        }
        if (i >= n) {
            break;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) {
                return 0;
            }
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) {
                return 0;
            }
            unsigned char c1 = s[i + 1];
            unsigned char lo = (c == 0xE0) ? 0xA0 : 0x80; /* overlong */
            unsigned char hi = (c == 0xED) ? 0x9F : 0xBF; /* surrogates */
            if (c1 < lo || c1 > hi || (s[i + 2] & 0xC0) != 0x80) {
                return 0;
            }
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) {
                return 0;
            }
            unsigned char c1 = s[i + 1];
            unsigned char lo = (c == 0xF0) ? 0x90 : 0x80; /* overlong */
            unsigned char hi = (c == 0xF4) ? 0x8F : 0xBF; /* above U+10FFFF */
            if (c1 < lo || c1 > hi || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80) {
                return 0;
            }
            i += 4;
        } else {
            return 0; /* 0x80-0xC1 (continuation or overlong lead), 0xF5-0xFF */
        }
    }
    return 1;
}

static PyObject *
utf8_check(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer data;
    int ok;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    ok = valid_utf8((const unsigned char *)data.buf, data.len);
    PyBuffer_Release(&data);
    return PyBool_FromLong(ok);
}

/* -- receiving (RFC 6455 §5.2) ------------------------------------------------------- */

/* A Frame as frames.Frame(opcode, data) builds it: FIN set, no RSV bit. Steals `data`. */
static PyObject *
new_frame(int opcode, PyObject *data)
{
    PyTypeObject *type = (PyTypeObject *)frame_type;
    PyObject *frame = type->tp_alloc(type, 0);
    if (frame == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    if (PyObject_SetAttr(frame, str_opcode, opcode_members[opcode]) < 0 ||
        PyObject_SetAttr(frame, str_data, data) < 0 || PyObject_SetAttr(frame, str_fin, Py_True) < 0 ||
        PyObject_SetAttr(frame, str_rsv1, Py_False) < 0 || PyObject_SetAttr(frame, str_rsv2, Py_False) < 0 ||
        PyObject_SetAttr(frame, str_rsv3, Py_False) < 0) {
        Py_DECREF(data);
        Py_DECREF(frame);
        return NULL;
    }
    Py_DECREF(data);
    return frame;
}

/* parse_frames(buffer, events, budget, mask, max_size, pongs) -> status
 *
 * buffer: the protocol's receive bytearray; the frames taken are deleted from its front.
 * events: the list the Frames are appended to, at most `budget` of them.
 * mask: True on the server (frames must be masked, §5.1), False on the client.
 * max_size: the payload limit of a data frame, or None for none (checked on the header).
 * pongs: the list the answers to PINGs are appended to (wire bytes), or None to
 *   leave PINGs to Python (the client, whose PONGs are masked; a closing protocol).
 */
static PyObject *
parse_frames(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    PyObject *buffer, *events, *pongs;
    long long budget;
    uint64_t max_size = 0;
    int limited = 0, refuse_data = 0, overflow = 0;
    int must_mask;
    Py_buffer view;
    Py_ssize_t pos = 0;
    int status = STATUS_EMPTY;
    int failed = 0;

    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "parse_frames takes 6 arguments");
        return NULL;
    }
    buffer = args[0];
    events = args[1];
    pongs = args[5];
    if (!PyByteArray_CheckExact(buffer) || !PyList_CheckExact(events) ||
        (pongs != Py_None && !PyList_CheckExact(pongs))) {
        PyErr_SetString(PyExc_TypeError, "parse_frames(bytearray, list, int, bool, int | None, list | None)");
        return NULL;
    }
    if (!PyLong_Check(args[2]) || (args[4] != Py_None && !PyLong_Check(args[4]))) {
        PyErr_SetString(PyExc_TypeError, "parse_frames: budget must be an int, max_size an int or None");
        return NULL;
    }
    /* Any int is accepted as Python accepts it: a budget beyond the C range is no
     * bound; a limit beyond it is none either (no length is over 2**63 - 1, §5.2);
     * a negative limit refuses every data frame (the Python parser then fails it). */
    budget = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (budget == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow > 0) {
        budget = LLONG_MAX;
    }
    must_mask = PyObject_IsTrue(args[3]);
    if (must_mask < 0) {
        return NULL;
    }
    if (args[4] != Py_None) {
        long long limit = PyLong_AsLongLongAndOverflow(args[4], &overflow);
        if (limit == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow < 0 || (overflow == 0 && limit < 0)) {
            limited = 1;
            refuse_data = 1;
        } else if (overflow == 0) {
            limited = 1;
            max_size = (uint64_t)limit;
        }
    }
    if (frame_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ws4web._speedups.configure() was not called");
        return NULL;
    }
    /* Exporting the buffer forbids resizing it until released: nothing can move
     * the bytes under us, even while the GIL is released to unmask a large payload. */
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)view.buf;
    const Py_ssize_t size = view.len;

    while (1) {
        const Py_ssize_t left = size - pos;
        if (left == 0) {
            status = STATUS_EMPTY;
            break;
        }
        if (budget <= 0) {
            status = STATUS_BUDGET;
            break;
        }
        if (left < 2) {
            status = STATUS_PARTIAL;
            break;
        }
        const unsigned char *p = buf + pos;
        const unsigned int b0 = p[0], b1 = p[1];
        const int opcode = (int)(b0 & 0x0F);
        const int fin = (b0 & 0x80) != 0;
        const int masked = (b1 & 0x80) != 0;
        uint64_t length = b1 & 0x7F;
        Py_ssize_t header = 2;

        /* §5.2: any RSV bit belongs to an extension (or is an error): Python's. */
        if (b0 & 0x70) {
            status = STATUS_PYTHON;
            break;
        }
        /* §5.1: a server reads masked frames only, a client unmasked frames only. */
        if (masked != must_mask) {
            status = STATUS_PYTHON;
            break;
        }
        if (opcode == 0x1 || opcode == 0x2) {
            /* §5.4: fragments carry message state; only whole messages here. */
            if (!fin) {
                status = STATUS_PYTHON;
                break;
            }
        } else if (opcode == 0xA || (opcode == 0x9 && pongs != Py_None)) {
            /* §5.5: control frames are never fragmented and carry at most 125 bytes. */
            if (!fin || length > 125) {
                status = STATUS_PYTHON;
                break;
            }
        } else {
            /* CONTINUATION (§5.4), CLOSE (§5.5.1), a client's PING, reserved opcodes (§5.2). */
            status = STATUS_PYTHON;
            break;
        }
        if (length == 126) {
            if (left < 4) {
                status = STATUS_PARTIAL;
                break;
            }
            length = ((uint64_t)p[2] << 8) | p[3];
            header = 4;
        } else if (length == 127) {
            if (left < 10) {
                status = STATUS_PARTIAL;
                break;
            }
            length = 0;
            for (int k = 2; k < 10; k++) {
                length = (length << 8) | p[k];
            }
            header = 10;
            if (length >> 63) { /* §5.2: the most significant bit MUST be 0 */
                status = STATUS_PYTHON;
                break;
            }
        }
        /* §10.4: the limit is checked on the header, before any payload is read
         * (control frames are bounded by 125 bytes instead). */
        if (opcode < 8 && limited && (refuse_data || length > max_size)) {
            status = STATUS_PYTHON;
            break;
        }
        if (masked) {
            header += 4;
        }
        if (left < header || (uint64_t)(left - header) < length) {
            status = STATUS_PARTIAL;
            break;
        }
        const Py_ssize_t n = (Py_ssize_t)length; /* <= left: fits */
        const unsigned char *payload = p + header;
        PyObject *data;
        if (masked) {
            data = PyBytes_FromStringAndSize(NULL, n);
            if (data == NULL) {
                failed = 1;
                break;
            }
            xor_mask_maybe_nogil(payload, (unsigned char *)PyBytes_AS_STRING(data), n, payload - 4);
        } else {
            data = PyBytes_FromStringAndSize((const char *)payload, n);
            if (data == NULL) {
                failed = 1;
                break;
            }
        }
        /* §8.1: a text message must be valid UTF-8; Python fails it with 1007. */
        if (opcode == 0x1 && !valid_utf8((const unsigned char *)PyBytes_AS_STRING(data), n)) {
            Py_DECREF(data);
            status = STATUS_PYTHON;
            break;
        }
        if (opcode == 0x9) {
            /* §5.5.2: answer with a PONG carrying the same payload (n <= 125, unmasked). */
            PyObject *pong = PyBytes_FromStringAndSize(NULL, n + 2);
            if (pong == NULL) {
                Py_DECREF(data);
                failed = 1;
                break;
            }
            unsigned char *w = (unsigned char *)PyBytes_AS_STRING(pong);
            w[0] = 0x8A;
            w[1] = (unsigned char)n;
            if (n) {
                memcpy(w + 2, PyBytes_AS_STRING(data), (size_t)n);
            }
            int r = PyList_Append(pongs, pong);
            Py_DECREF(pong);
            if (r < 0) {
                Py_DECREF(data);
                failed = 1;
                break;
            }
        }
        PyObject *frame = new_frame(opcode, data);
        if (frame == NULL) {
            failed = 1;
            break;
        }
        int r = PyList_Append(events, frame);
        Py_DECREF(frame);
        if (r < 0) {
            failed = 1;
            break;
        }
        pos += header + n;
        budget--;
    }
    PyBuffer_Release(&view);
    /* Frames appended are taken: their bytes go, even if a later step failed. */
    if (pos > 0 && PySequence_DelSlice(buffer, 0, pos) < 0) {
        return NULL;
    }
    if (failed) {
        return NULL;
    }
    return PyLong_FromLong(status);
}

/* -- sending (RFC 6455 §5.2) --------------------------------------------------------- */

/* frame_wire(b0, data, mask) -> list[bytes]: see frames.frame_wire. */
static PyObject *
frame_wire(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    unsigned char header[14];
    Py_ssize_t header_size;
    Py_buffer data;
    PyObject *key = NULL, *result = NULL, *first = NULL, *second = NULL;
    long b0;
    int mask;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "frame_wire takes 3 arguments");
        return NULL;
    }
    b0 = PyLong_AsLong(args[0]);
    if (b0 == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (b0 < 0 || b0 > 255) {
        PyErr_SetString(PyExc_ValueError, "b0 must be a byte");
        return NULL;
    }
    mask = PyObject_IsTrue(args[2]);
    if (mask < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const Py_ssize_t n = data.len;
    const unsigned char mask_bit = mask ? 0x80 : 0;
    header[0] = (unsigned char)b0;
    if (n < 126) {
        header[1] = mask_bit | (unsigned char)n;
        header_size = 2;
    } else if (n < 65536) {
        header[1] = mask_bit | 126;
        header[2] = (unsigned char)(n >> 8);
        header[3] = (unsigned char)n;
        header_size = 4;
    } else {
        uint64_t len64 = (uint64_t)n;
        header[1] = mask_bit | 127;
        for (int k = 0; k < 8; k++) {
            header[2 + k] = (unsigned char)(len64 >> (56 - 8 * k));
        }
        header_size = 10;
    }
    if (mask) {
        /* §5.3: a fresh, unpredictable key per frame. */
        if (urandom == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "ws4web._speedups.configure() was not called");
            goto done;
        }
        key = PyObject_CallFunction(urandom, "n", (Py_ssize_t)4);
        if (key == NULL) {
            goto done;
        }
        if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 4) {
            PyErr_SetString(PyExc_ValueError, "urandom(4) did not return 4 bytes");
            goto done;
        }
        memcpy(header + header_size, PyBytes_AS_STRING(key), 4);
        header_size += 4;
    }
    const unsigned char *key_bytes = header + header_size - 4;
    if (n <= JOIN_LIMIT) {
        first = PyBytes_FromStringAndSize(NULL, header_size + n);
        if (first == NULL) {
            goto done;
        }
        unsigned char *w = (unsigned char *)PyBytes_AS_STRING(first);
        memcpy(w, header, (size_t)header_size);
        if (n) {
            if (mask) {
                xor_mask((const unsigned char *)data.buf, w + header_size, n, key_bytes);
            } else {
                memcpy(w + header_size, data.buf, (size_t)n);
            }
        }
        result = PyList_New(1);
        if (result == NULL) {
            goto done;
        }
        PyList_SET_ITEM(result, 0, first);
        first = NULL;
    } else {
        first = PyBytes_FromStringAndSize((const char *)header, header_size);
        if (first == NULL) {
            goto done;
        }
        if (mask) {
            second = PyBytes_FromStringAndSize(NULL, n);
            if (second == NULL) {
                goto done;
            }
            xor_mask_maybe_nogil((const unsigned char *)data.buf, (unsigned char *)PyBytes_AS_STRING(second), n,
                                 key_bytes);
        } else {
            Py_INCREF(args[1]);
            second = args[1]; /* sent as given: no copy */
        }
        result = PyList_New(2);
        if (result == NULL) {
            goto done;
        }
        PyList_SET_ITEM(result, 0, first);
        PyList_SET_ITEM(result, 1, second);
        first = second = NULL;
    }
done:
    Py_XDECREF(first);
    Py_XDECREF(second);
    Py_XDECREF(key);
    PyBuffer_Release(&data);
    return result;
}

/* -- setup ----------------------------------------------------------------------------- */

/* configure(Frame, opcodes, urandom): opcodes maps each opcode int to its Opcode member. */
static PyObject *
configure(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *frame, *opcodes, *random;
    if (!PyArg_ParseTuple(args, "O!O!O:configure", &PyType_Type, &frame, &PyDict_Type, &opcodes, &random)) {
        return NULL;
    }
    PyObject *members[16] = {NULL};
    static const int needed[] = {0x0, 0x1, 0x2, 0x8, 0x9, 0xA};
    for (size_t k = 0; k < sizeof(needed) / sizeof(needed[0]); k++) {
        PyObject *key = PyLong_FromLong(needed[k]);
        if (key == NULL) {
            return NULL;
        }
        PyObject *member = PyDict_GetItemWithError(opcodes, key); /* borrowed */
        Py_DECREF(key);
        if (member == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_KeyError, "opcode %d missing", needed[k]);
            }
            return NULL;
        }
        members[needed[k]] = member;
    }
    for (int k = 0; k < 16; k++) {
        Py_XINCREF(members[k]);
        Py_XSETREF(opcode_members[k], members[k]);
    }
    Py_INCREF(frame);
    Py_XSETREF(frame_type, frame);
    Py_INCREF(random);
    Py_XSETREF(urandom, random);
    Py_RETURN_NONE;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "XOR data with a 4-byte WebSocket mask."},
    {"utf8_check", utf8_check, METH_O, "Whether a bytes-like object is valid UTF-8."},
    {"parse_frames", (PyCFunction)(void (*)(void))parse_frames, METH_FASTCALL,
     "Take the simple, complete frames at the front of a receive buffer."},
    {"frame_wire", (PyCFunction)(void (*)(void))frame_wire, METH_FASTCALL, "A frame's bytes on the wire."},
    {"configure", configure, METH_VARARGS, "Give the module the Frame class, the opcodes and os.urandom."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "ws4web._speedups", "C accelerator for ws4web.", -1, speedups_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_opcode = PyUnicode_InternFromString("opcode");
    str_data = PyUnicode_InternFromString("data");
    str_fin = PyUnicode_InternFromString("fin");
    str_rsv1 = PyUnicode_InternFromString("rsv1");
    str_rsv2 = PyUnicode_InternFromString("rsv2");
    str_rsv3 = PyUnicode_InternFromString("rsv3");
    if (!str_opcode || !str_data || !str_fin || !str_rsv1 || !str_rsv2 || !str_rsv3) {
        return NULL;
    }
    return PyModule_Create(&speedups_module);
}
