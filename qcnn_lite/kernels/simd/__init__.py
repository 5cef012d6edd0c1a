"""Byte-shuffle look-up kernels (C++ intrinsics); use them through :mod:`qcnn_lite.kernels._shuffle`."""
