"""Look-up-table kernels behind one dispatch point.

``QCNN_LITE_BACKEND=numpy|pythran|auto`` (default ``auto``) picks the
implementation when this module is imported; :func:`set_backend` changes it at
run time. ``auto`` uses the compiled Pythran kernels when they were built and
the pure-numpy path otherwise.

The Pythran kernels are built for several CPU targets (``baseline``, ``v3``,
``v4`` on x86-64; ``baseline``, ``dotprod`` on aarch64; see ``cpu``). The best
built target this CPU runs is used, or the one ``QCNN_LITE_TARGET`` names (an
error when it is not built or cannot run here); :func:`set_target` changes it,
:func:`describe` says which one runs and why.

Every array is checked here, before any kernel sees it: a compiled kernel
indexes tables with the codes, so a code out of range would read out of bounds.
"""
from __future__ import annotations

from .dispatch import (available_backends, backend, built_targets, cpu_info, describe, runnable_targets,
                       set_backend, set_target, simd_isas, target)
from .lut import (CONV_TABLE_DTYPES, conv2d_lut, linear_codes_packer, linear_lut, linear_lut_u8, lrn, pack_linear_codes,
                  unpack_linear_codes)
from .noblas import conv2d_direct, conv_epilogue, direct_available, linear_direct
from ._convq import DEFAULT_SCALE_MODE, SCALE_MODES, profile_conv

__all__ = ["CONV_TABLE_DTYPES", "SCALE_MODES", "DEFAULT_SCALE_MODE", "linear_lut", "linear_lut_u8", "pack_linear_codes",
           "linear_codes_packer", "unpack_linear_codes", "conv2d_lut", "lrn", "backend", "set_backend", "available_backends", "target",
           "set_target", "cpu_info", "built_targets", "runnable_targets", "simd_isas", "describe", "direct_available", "conv2d_direct",
           "linear_direct", "conv_epilogue", "profile_conv"]
