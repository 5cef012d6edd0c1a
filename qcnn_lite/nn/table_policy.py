"""When a quantized conv layer runs look-up tables, and at which precision: the runtime cost policy.

The cost model of the paper (:mod:`qcnn_lite.paper.cost`) counts operations; this policy
prices them as the kernels run them here, with costs fitted by ``scripts/conv8_costs.py``
(figures, machine and date in ``docs/measurements.md``).
"""
from __future__ import annotations

__all__ = ["INT8_MIN_QMAX", "CONV_SCALE_MODE", "LUT_MIN_SPEEDUP", "INT_TABLE_COSTS", "INT_TABLE_MAX_BYTES"]

# int8 conv tables need at least this resolution (qmax = min(127, 32767 // (kh*kw*M))); else int16 tables.
INT8_MIN_QMAX = 31


# How conv layers scale their integer tables (kernels.conv2d_lut's scale_mode): "exact" (max |entry|)
# kept top-1 within 0.11 pt of float tables on the mini networks, the Cauchy-Schwarz "bound" lost up
# to 0.6 pt (it is 2-4x the largest entry: 1-2 bits lost). scripts/conv8_accuracy.py measures it;
# the figures are in docs/measurements.md.
CONV_SCALE_MODE = "exact"


# Below this theoretical speed-up a conv layer's float tables lose to its decoded weight: see QConv2d.uses_tables.
LUT_MIN_SPEEDUP = 3.0


# The integer-table cost model of QConv2d.uses_tables, in decoded-weight multiply-adds: per table
# multiply-add (build + quantize), per table addition, and per call (tables minus decoded weight).
# Fitted on every conv layer of AlexNet and the three mini networks by scripts/conv8_costs.py
# (the fitted times are in docs/measurements.md); int16 sums run at about half the int8 rate.
INT_TABLE_COSTS = {"int8": (1.4, 0.9, -0.8e6), "int16": (1.4, 1.8, -0.8e6)}


# Past this size an integer table leaves L2 and streams from L3: AlexNet's conv1 (6.8 MB of int8
# table) ran no faster than its decoded weight, for 50x its memory.
INT_TABLE_MAX_BYTES = 4 << 20
