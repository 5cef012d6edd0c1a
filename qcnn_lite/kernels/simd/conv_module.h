// The integer conv functions of the _lut_simd module (defined in conv_module.cpp).
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace qlconv_py {
PyObject* py_conv_isas(PyObject*, PyObject*);
PyObject* py_conv2d(PyObject*, PyObject* args);
PyObject* py_conv_table(PyObject*, PyObject* args);
PyObject* py_conv_sums(PyObject*, PyObject* args);
PyObject* py_direct_block(PyObject*, PyObject* args);
PyObject* py_direct_conv2d(PyObject*, PyObject* args);
extern const char DOC_CONV2D[], DOC_CONV_TABLE[], DOC_CONV_SUMS[], DOC_DIRECT_CONV2D[];
}  // namespace qlconv_py
