/* Optional C accelerator for ws4web: WebSocket payload masking (RFC 6455 section 5.3).
 *
 * apply_mask(data, mask) -> bytes: XOR `data` with the 4-byte `mask` repeated.
 * The pure-Python fallback in ws4web/frames.py computes the same result; the tests
 * compare both. Built when a C compiler is present (see setup.py); never required.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t n, const unsigned char mask[4])
{
    /* Work on 8-byte words: the mask repeats every 4 bytes, so a 64-bit key made of
     * the mask twice lines up with every 8-byte-aligned offset from the start. The
     * loop has no dependencies between iterations, which lets the compiler vectorize
     * it; memcpy keeps unaligned access defined behaviour. */
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

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
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
        const unsigned char *src = (const unsigned char *)data.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        if (data.len >= 65536) {
            /* Large payloads: let other threads run while we XOR. */
            Py_BEGIN_ALLOW_THREADS
            xor_mask(src, dst, data.len, (const unsigned char *)mask.buf);
            Py_END_ALLOW_THREADS
        } else {
            xor_mask(src, dst, data.len, (const unsigned char *)mask.buf);
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "XOR data with a 4-byte WebSocket mask."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "ws4web._speedups", "C accelerator for ws4web.", -1, speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
