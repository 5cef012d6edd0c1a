// Helpers shared by the extension's binding files (_lut_simd.cpp, conv_module.cpp).
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstddef>
#include <vector>

namespace qlpy {

// RAII for the Py_buffers of one call.
struct Buffers {
    std::vector<Py_buffer*> held;
    ~Buffers() {
        for (Py_buffer* b : held) PyBuffer_Release(b);
    }
};

inline bool check_len(const char* name, const Py_buffer& b, size_t items, size_t itemsize) {
    if ((size_t)b.len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s has %zd bytes, expected %zu", name, b.len, items * itemsize);
        return false;
    }
    return true;
}

// The names[i] whose supported(i) holds, as a Python list (new reference; nullptr on error).
template <typename Supported>
PyObject* supported_names(const char* const* names, int n, Supported supported) {
    PyObject* out = PyList_New(0);
    if (!out) return nullptr;
    for (int i = 0; i < n; i++)
        if (supported(i)) {
            PyObject* s = PyUnicode_FromString(names[i]);
            if (!s || PyList_Append(out, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(out);
                return nullptr;
            }
            Py_DECREF(s);
        }
    return out;
}

}  // namespace qlpy
