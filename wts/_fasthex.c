/* The .wts fast paths in C, without the GIL: decode "count" 9-byte records " hhhhhhhh" (8 hex digits of a
 * big-endian float32 bit pattern) into native uint32, and encode uint32 values into such records.
 * Optional: wts/text.py falls back to numpy + binascii when this module is not built (setup.py marks the
 * extension optional). Pure validation + decode: any record that is not a space and 8 hex digits stops it,
 * and the caller's general path finds and reports the exact defect. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static int8_t hexval[256];

static PyObject *decode_records(PyObject *self, PyObject *args) {
    Py_buffer src, dst;
    Py_ssize_t offset, count;
    if (!PyArg_ParseTuple(args, "y*nnw*", &src, &offset, &count, &dst)) return NULL;
    Py_ssize_t bad = -1;
    if (offset < 0 || count < 0 || offset + 9 * count > src.len || dst.len < 4 * count) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "decode_records: range outside the buffers");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)src.buf + offset;
    uint32_t *out = (uint32_t *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++, p += 9) {
        int bits = 0;  /* OR of all digit values: negative when any byte is not a hex digit */
        uint32_t v = 0;
        for (int k = 1; k <= 8; k++) {
            int d = hexval[p[k]];
            bits |= d;
            v = (v << 4) | (uint32_t)(d & 15);
        }
        if (p[0] != ' ' || bits < 0) {
            bad = i;
            break;
        }
        out[i] = v;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return PyLong_FromSsize_t(bad);
}

static const char digits[] = "0123456789abcdef";

static PyObject *encode_records(PyObject *self, PyObject *args) {
    Py_buffer src, dst;
    if (!PyArg_ParseTuple(args, "y*w*", &src, &dst)) return NULL;
    Py_ssize_t count = src.len / 4;
    if (src.len % 4 || dst.len != 9 * count) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "encode_records: dst must hold 9 bytes per uint32 of src");
        return NULL;
    }
    const uint32_t *in = (const uint32_t *)src.buf;
    unsigned char *q = (unsigned char *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++, q += 9) {
        uint32_t v = in[i];
        q[0] = ' ';
        for (int k = 8; k >= 1; k--, v >>= 4) q[k] = (unsigned char)digits[v & 15];
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode_records", decode_records, METH_VARARGS,
     "decode_records(src, offset, count, dst) -> -1, or the index of the first record that is not ' ' + 8 hex digits"},
    {"encode_records", encode_records, METH_VARARGS,
     "encode_records(src, dst): each native uint32 of src as ' ' + 8 lowercase hex digits into dst (9 bytes each)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wts._fasthex", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fasthex(void) {
    for (int c = 0; c < 256; c++) hexval[c] = -1;
    for (int c = 0; c < 10; c++) hexval['0' + c] = (int8_t)c;
    for (int c = 0; c < 6; c++) hexval['a' + c] = hexval['A' + c] = (int8_t)(10 + c);
    return PyModule_Create(&module);
}
