"""Dense and quantized fully-connected and convolutional layers.

``Linear`` and ``Conv2d`` are the dense reference (im2col + BLAS).
``QLinear`` and ``QConv2d`` are their Q-CNN counterparts: codebooks, codes and
a look-up-table forward pass. Layers only run: :mod:`qcnn_lite.quant.quantize` builds
the quantized ones (:func:`~qcnn_lite.quant.quantize.quantize_linear`, :func:`~qcnn_lite.quant.quantize.quantize_conv2d`).
"""
from __future__ import annotations

import numpy as np

from qcnn_lite import kernels
from qcnn_lite.kernels import direct_conv
from qcnn_lite.kernels.geometry import conv_geometry, conv_output_size, phase_split, run_starts
from qcnn_lite.nn import table_policy
from qcnn_lite.nn.checks import as_bias, as_f32, check_input, positive_int

__all__ = ["Linear", "Conv2d", "QLinear", "QConv2d", "im2col", "code_dtype"]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int, groups: int = 1) -> np.ndarray:
    """Patches of x (n, C, H, W) in (kh, kw, c) order: -> (groups, n*OH*OW, kh*kw*C/groups)."""
    n, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    s = xp.strides
    win = np.lib.stride_tricks.as_strided(
        xp, (n, OH, OW, kh, kw, C), (s[0], s[2] * stride, s[3] * stride, s[2], s[3], s[1]), writeable=False
    )
    cg = C // groups
    win = win.reshape(n, OH, OW, kh, kw, groups, cg)
    return np.ascontiguousarray(win.transpose(5, 0, 1, 2, 3, 4, 6)).reshape(groups, n * OH * OW, kh * kw * cg)


# The decoded-weight path of QConv2d builds its patches in blocks of about this many bytes,
# so a phone's peak memory does not grow with the image. The dense Conv2d (the speed baseline)
# does not block. With runs (below) blocks cost little (figures in docs/measurements.md).
_COLS_BYTES = 1 << 20


def _conv_dense(x: np.ndarray, w_flat: np.ndarray, bias: np.ndarray, kh: int, kw: int, stride: int, padding: int,
                groups: int, block_bytes: int | None = None, relu: bool = False) -> np.ndarray:
    """Dense conv by BLAS over contiguous runs; w_flat (Ct, Cg*kh*kw) in (c, i, j) order (torch's, flattened).

    The input is phase-split (:func:`~qcnn_lite.kernels.geometry.phase_split`), so the patch
    matrix of one image, (Cg*kh*kw, OH*Wq), is a stack of whole contiguous runs: one fancy-index
    copy, then one product ``w @ cols`` whose result is already in (Ct, OH, OW) order (plus
    Wq - OW scratch columns per row). The old im2col, patches (OH*OW, kh*kw*C) in (kh, kw, c)
    order, gathered 3 channels at a time and transposed its result: it took about twice as
    long on AlexNet's conv1, where most of the time is now the product itself
    (docs/measurements.md).

    Bias and (with ``relu``) the ReLU are applied while the scratch columns are dropped
    (``kernels.conv_epilogue``, one compiled pass). With
    ``block_bytes``, patches are built for a block of images, or of output rows of one image,
    of about that size at a time; without, for the whole batch at once.
    """
    n, C, H, W = x.shape
    Ct = w_flat.shape[0]
    cg, ctg = C // groups, Ct // groups
    xq, OH, OW, Hq, Wq = phase_split(x.reshape(n * C, H, W), kh, kw, stride, padding)
    SS, P = xq.shape[1], xq.shape[2]
    flat = xq.reshape(-1)
    starts = run_starts(cg, kh, kw, stride, P, Wq)
    n_items = starts.size
    out = np.empty((n, Ct, OH, OW), np.float32)
    row_bytes = 4 * Wq * n_items * groups
    rows = OH * n if block_bytes is None else max(1, block_bytes // row_bytes)  # output rows per block
    images = max(1, rows // OH)  # whole images per block, when one image fits
    if images == 1 and rows < OH:
        rows = -(-OH // -(-OH // rows))  # equal blocks: 55 rows in 12s would leave a block of 7
    # the product of one block, at row pitch Wq; whole images at once, or one row block of one image
    buf = np.empty(min(images, n) * Ct * (OH if images > 1 else rows) * Wq, np.float32)
    for i in range(0, n, images):
        b = min(images, n - i)
        for r0 in range(0, OH, rows if images == 1 else OH):
            r1 = OH if images > 1 else min(OH, r0 + rows)
            L = (r1 - r0) * Wq
            acc = buf[:b * Ct * L].reshape(b, Ct, L)  # contiguous, however short the block
            runs = np.lib.stride_tricks.as_strided(flat, (flat.size - L + 1, L), (4, 4), writeable=False)
            for g in range(groups):
                # run start of item q, image i + k, group g: one image is C*SS*P values, one group cg*SS*P
                first = (np.arange(i, i + b) * (C * SS * P) + g * cg * SS * P + r0 * Wq)[:, None] + starts
                cols = runs[first]  # (b, n_items, L)
                wg = w_flat[g * ctg:(g + 1) * ctg]
                if b == 1:
                    np.matmul(wg, cols[0], out=acc[0, g * ctg:(g + 1) * ctg])
                else:
                    acc[:, g * ctg:(g + 1) * ctg] = np.matmul(wg, cols)
            for k in range(b):  # while the block is in cache
                kernels.conv_epilogue(acc[k], bias, out[i + k], r0, Wq, relu)
    return out


# --------------------------------------------------------------------------- dense
class Linear:
    """Dense fully-connected layer: weight (out, in), bias (out,)."""

    kind = "fc"

    def __init__(self, weight, bias=None):
        self.weight = as_f32("weight", weight, 2)
        self.bias = as_bias(bias, self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def dense_weight(self) -> np.ndarray:
        return self.weight

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (n, in) -> (n, out)."""
        x = check_input(x, 2, self.in_features, "Linear")
        return x @ self.weight.T + self.bias


class Conv2d:
    """Dense convolution: weight (out, in/groups, kh, kw), bias (out,)."""

    kind = "conv"

    def __init__(self, weight, bias=None, stride: int = 1, padding: int = 0, groups: int = 1):
        self.weight = as_f32("weight", weight, 4)
        self.stride = positive_int("stride", stride)
        self.padding = positive_int("padding", padding, 0)
        self.groups = positive_int("groups", groups)
        if self.weight.shape[0] % self.groups:
            raise ValueError(f"{self.weight.shape[0]} output channels are not divisible by groups={self.groups}")
        self.bias = as_bias(bias, self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]

    def dense_weight(self) -> np.ndarray:
        return self.weight

    def __call__(self, x: np.ndarray, relu: bool = False) -> np.ndarray:
        """x (n, C, H, W) -> (n, out, OH, OW); ``relu`` applies a ReLU to the output (fused)."""
        x = check_input(x, 4, self.in_channels, "Conv2d")
        kh, kw = self.kernel_size
        return _conv_dense(x, self.weight.reshape(self.out_channels, -1), self.bias, kh, kw, self.stride,
                           self.padding, self.groups, relu=relu)


# --------------------------------------------------------------------------- quantized
def code_dtype(n_codewords: int) -> np.dtype:
    """Smallest unsigned dtype that holds codes ``0 .. n_codewords - 1``."""
    return np.dtype(np.uint8) if n_codewords <= 256 else np.dtype(np.uint16)


class _QuantizedLayer:
    codebooks: np.ndarray
    codes: np.ndarray
    bias: np.ndarray
    history_: list[float]

    @property
    def n_subspaces(self) -> int:
        return self.codebooks.shape[0]

    @property
    def n_codewords(self) -> int:
        return self.codebooks.shape[1]

    @property
    def sub_dim(self) -> int:
        return self.codebooks.shape[2]

    @property
    def table_dtype(self) -> str:
        """Precision of the look-up tables, one of the class's ``TABLE_DTYPES`` (fastest first):
        QLinear ``"uint8"`` or ``"float32"``; QConv2d ``"int8"`` (int16 sums), ``"int16"`` (int32 sums)
        or ``"float32"``."""
        return self._table_dtype

    @table_dtype.setter
    def table_dtype(self, value: str) -> None:
        if value not in self.TABLE_DTYPES:
            raise ValueError(f"{type(self).__name__} table_dtype must be one of "
                             f"{', '.join(map(repr, self.TABLE_DTYPES))}, got {value!r}")
        self._check_table_dtype(value)
        self._table_dtype = value

    def _check_table_dtype(self, value: str) -> None:
        """Raise ValueError when this layer's shape rules out ``value`` tables."""

    def _validate(self) -> None:
        M, K, d = self.codebooks.shape
        if self.codes.shape[-1] != M:
            raise ValueError(f"codes have {self.codes.shape[-1]} sub-spaces, codebooks {M}")
        if self.codes.size and int(self.codes.max()) >= K:
            raise ValueError(f"codes must be < K={K}, found {int(self.codes.max())}")
        if self.bias.shape != (self.codes.shape[0],):
            raise ValueError(f"bias shape {self.bias.shape} does not match {self.codes.shape[0]} outputs")


def _codes(codes, K: int) -> np.ndarray:
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= K):
        raise ValueError(f"codes must lie in [0, {K}), got [{codes.min()}, {codes.max()}]")
    return np.ascontiguousarray(codes, dtype=code_dtype(K))


class QLinear(_QuantizedLayer):
    """Quantized fully-connected layer.

    codebooks (M, K, d) float32, codes (out, M) uint8/uint16, bias (out,) float32;
    ``in_features = M * d``. Weight row o, block m, is ``codebooks[m, codes[o, m]]``.
    """

    kind = "fc"
    TABLE_DTYPES = ("uint8", "float32")  # table precisions, fastest first

    def __init__(self, codebooks, codes, bias, table_dtype: str | None = None):
        self.codebooks = as_f32("codebooks", codebooks, 3)
        self.codes = _codes(codes, self.codebooks.shape[1])
        if self.codes.ndim != 2:
            raise ValueError(f"QLinear codes must be (out, M), got shape {self.codes.shape}")
        self.bias = as_bias(bias, self.codes.shape[0])
        self.history_ = []
        self._validate()
        self.table_dtype = self.default_table_dtype(self.n_codewords) if table_dtype is None else table_dtype

    @classmethod
    def from_packed(cls, codebooks, packed, bias, table_dtype: str | None = None) -> "QLinear":
        """A layer from codes already packed by :func:`kernels.linear_codes_packer` (or
        :func:`kernels.pack_linear_codes`) on the current backend, without an unpacked copy.

        codebooks (M, K, d) float32; ``packed`` holds (out, M) codes < K, validated when they were
        packed; bias (out,). The codes are unpacked only if asked for (``codes``).
        """
        self = cls.__new__(cls)
        self.codebooks = as_f32("codebooks", codebooks, 3)
        M, K, _ = self.codebooks.shape
        if (packed.n_subspaces, packed.K) != (M, K):
            raise ValueError(f"packed codes have {packed.n_subspaces} sub-spaces and K={packed.K}, "
                             f"the codebooks {M} and K={K}")
        self._codes = None
        self._packed = (kernels.backend(), packed)
        self.bias = as_bias(bias, packed.n_out)
        self.history_ = []
        self.table_dtype = self.default_table_dtype(K) if table_dtype is None else table_dtype
        return self

    @property
    def codes(self) -> np.ndarray:
        """(out, M) codes. Once the byte-shuffle kernels have packed them, only the packed copy is
        kept (fc6's codes are 9.4 MB, a sixth of the process); they are unpacked again on demand."""
        if self._codes is None:
            self._codes = kernels.unpack_linear_codes(self._packed[1])
        return self._codes

    @codes.setter
    def codes(self, value: np.ndarray) -> None:
        self._codes = value
        self._packed: tuple[str, object] | None = None

    @staticmethod
    def default_table_dtype(K: int) -> str:
        """8-bit tables (byte-shuffle kernels) wherever they address the codewords (K <= 256).

        An output's error is at most M * scale / 2 (one scale per table): on the mini
        networks top-1 moved by 0.04 pt or less per layer (the numpy emulation).
        """
        return "uint8" if K <= 256 else "float32"

    def _check_table_dtype(self, value: str) -> None:
        if value == "uint8" and self.n_codewords > 256:
            raise ValueError(f"8-bit tables take K <= 256, this layer has K={self.n_codewords}")

    @property
    def in_features(self) -> int:
        return self.n_subspaces * self.sub_dim

    @property
    def out_features(self) -> int:
        return self.bias.shape[0]  # not codes.shape[0]: that would unpack packed codes

    def dense_weight(self) -> np.ndarray:
        """The reconstructed weight, (out, in) float32."""
        return self.codebooks[np.arange(self.n_subspaces), self.codes].reshape(self.out_features, -1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Look-up-table forward pass: x (n, in) -> (n, out)."""
        x = check_input(x, 2, self.in_features, "QLinear")
        if self.table_dtype == "float32":
            return kernels.linear_lut(x, self.codebooks, self.codes, self.bias)
        # codes packed once per backend (validated then); the array is frozen so it cannot drift from them
        if self._packed is None or self._packed[0] != kernels.backend() or (self._codes is not None and self._codes.flags.writeable):
            codes = self.codes
            codes.flags.writeable = False
            self._packed = (kernels.backend(), kernels.pack_linear_codes(codes, self.n_codewords))
            if self._packed[1] is not None:
                self._codes = None  # inference needs only the packed copy
        return kernels.linear_lut_u8(x, self.codebooks, self._codes, self.bias, self._packed[1])


class QConv2d(_QuantizedLayer):
    """Quantized convolution.

    codebooks (M, K, d) float32, one per sub-space of d input channels, shared by
    all taps and groups; codes (out, kh, kw, M) uint8/uint16; bias (out,).
    ``in_channels = groups * M * d``.
    """

    kind = "conv"
    TABLE_DTYPES = kernels.CONV_TABLE_DTYPES  # ("int8", "int16", "float32"): table precisions, fastest first

    def __init__(self, codebooks, codes, bias, stride: int = 1, padding: int = 0, groups: int = 1,
                 table_dtype: str | None = None):
        self.codebooks = as_f32("codebooks", codebooks, 3)
        self.codes = _codes(codes, self.codebooks.shape[1])
        if self.codes.ndim != 4:
            raise ValueError(f"QConv2d codes must be (out, kh, kw, M), got shape {self.codes.shape}")
        self.stride = positive_int("stride", stride)
        self.padding = positive_int("padding", padding, 0)
        self.groups = positive_int("groups", groups)
        if self.codes.shape[0] % self.groups:
            raise ValueError(f"{self.codes.shape[0]} output channels are not divisible by groups={self.groups}")
        self.bias = as_bias(bias, self.codes.shape[0])
        self.history_ = []
        self._validate()
        self.table_dtype = self.default_table_dtype(*self.kernel_size, self.n_subspaces) if table_dtype is None else table_dtype

    @staticmethod
    def default_table_dtype(kh: int, kw: int, M: int) -> str:
        """The fastest table precision whose overflow bound holds with a useful resolution.

        An output sums n = kh*kw*M table entries; int8 tables keep |q| <= qmax =
        min(127, 32767 // n) so the int16 sum cannot overflow. int8 where qmax >=
        :data:`table_policy.INT8_MIN_QMAX` (n <= 1057), else int16 tables (int32 sums, qmax 32767
        up to n = 65537), else float. On the mini networks int8 tables (qmax 127, exact
        scale) moved top-1 by at most 0.11 pt (see :data:`table_policy.CONV_SCALE_MODE`).
        """
        n = kh * kw * M
        if 32767 // n >= table_policy.INT8_MIN_QMAX:
            return "int8"
        return "int16" if n <= 32767 else "float32"

    def _check_table_dtype(self, value: str) -> None:
        kh, kw = self.kernel_size
        n = kh * kw * self.n_subspaces
        if value != "float32" and n > 32767:
            raise ValueError(f"integer tables take kh*kw*M <= 32767 (an int16 sum could overflow); this layer has {n}")

    @property
    def in_channels(self) -> int:
        return self.groups * self.n_subspaces * self.sub_dim

    @property
    def out_channels(self) -> int:
        return self.codes.shape[0]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.codes.shape[1], self.codes.shape[2]

    def dense_weight(self) -> np.ndarray:
        """The reconstructed weight, (out, in/groups, kh, kw) float32."""
        Ct, kh, kw, M = self.codes.shape
        w = self.codebooks[np.arange(M), self.codes]  # (Ct, kh, kw, M, d)
        return np.ascontiguousarray(w.reshape(Ct, kh, kw, M * self.sub_dim).transpose(0, 3, 1, 2))

    def lut_speedup(self, height: int, width: int) -> float:
        """Theoretical speed-up of the table path on an H x W input:
        dense multiply-adds / (table multiply-adds + table additions)."""
        Ct, kh, kw, M = self.codes.shape
        K, d = self.n_codewords, self.sub_dim
        OH = conv_output_size(height, kh, self.stride, self.padding)
        OW = conv_output_size(width, kw, self.stride, self.padding)
        dense = Ct * kh * kw * M * d * OH * OW
        return dense / (self.groups * M * K * d * height * width + Ct * kh * kw * M * OH * OW)

    def table_work(self, height: int, width: int) -> tuple[int, int]:
        """(table multiply-adds, table additions) the kernels really do on an H x W input:
        the table covers the zero-padded phase planes (rows of SP pixels rounded up to 16),
        and every run is OH*Wq values long (Wq - OW scratch columns per row)."""
        Ct, kh, kw, M = self.codes.shape
        OH, _, Hq, Wq = conv_geometry(height, width, kh, kw, self.stride, self.padding)
        pp = -(-self.stride * self.stride * Hq * Wq // 16) * 16
        return self.groups * M * self.n_codewords * self.sub_dim * pp, Ct * kh * kw * M * (-(-OH * Wq // 32) * 32)

    def uses_tables(self, height: int, width: int) -> bool:
        """Whether :meth:`__call__` runs look-up tables (True) or the decoded weight (False) on an H x W input.

        Float tables: a table addition is a memory read; a BLAS multiply-add comes from
        registers and costs about 3.5x less (measured on x86). So a layer whose
        theoretical speed-up is below :data:`table_policy.LUT_MIN_SPEEDUP`, and whose decoded weight is
        smaller than its tables, runs faster and in less memory from the decoded weight.
        AlexNet's conv1 (one 3-D sub-space) is the case: 1.9x in theory, 139 KB of weights
        against 26 MB of tables per image.

        Integer tables (int8/int16): the measured cost model :data:`table_policy.INT_TABLE_COSTS`
        against the decoded weight's multiply-adds, for tables of at most
        :data:`table_policy.INT_TABLE_MAX_BYTES`. An int8 addition costs less than a BLAS multiply-add
        (0.75x: 32 a vector instruction, from L2), so most layers of the mini networks now
        pay off on tables (see ``bench-layers``). The model file stores codes either way.
        """
        if self.table_dtype != "float32":
            per_build, per_add, per_call = table_policy.INT_TABLE_COSTS[self.table_dtype]
            build, adds = self.table_work(height, width)
            Ct, kh, kw, M = self.codes.shape
            OH = conv_output_size(height, kh, self.stride, self.padding)
            OW = conv_output_size(width, kw, self.stride, self.padding)
            dense = Ct * kh * kw * M * self.sub_dim * OH * OW
            table_bytes = (1 if self.table_dtype == "int8" else 2) * build // self.sub_dim
            return per_build * build + per_add * adds + per_call < dense and table_bytes <= table_policy.INT_TABLE_MAX_BYTES
        if self.lut_speedup(height, width) >= table_policy.LUT_MIN_SPEEDUP:
            return True
        table_bytes = 4 * self.groups * self.n_subspaces * self.n_codewords * height * width
        return 4 * self.codes.size * self.sub_dim > table_bytes

    def __call__(self, x: np.ndarray, relu: bool = False) -> np.ndarray:
        """Forward pass: x (n, in, H, W) -> (n, out, OH, OW), by look-up tables or, where they
        cannot pay off (:meth:`uses_tables`), by the decoded weight. ``relu`` applies a ReLU
        to the output (fused into the decoded-weight path)."""
        x = check_input(x, 4, self.in_channels, "QConv2d")
        if self.uses_tables(x.shape[2], x.shape[3]):
            return kernels.conv2d_lut(x, self.codebooks, self.codes, self.bias, self.stride, self.padding, self.groups,
                                      self.table_dtype, table_policy.CONV_SCALE_MODE, relu=relu)
        Ct, kh, kw, M = self.codes.shape
        key = (id(self.codebooks), id(self.codes))
        if getattr(self, "_decoded", (None,))[0] != key:
            # Decoded once, then cached: only layers whose decoded weight is smaller than their
            # tables come here. The arrays are frozen so the cache cannot go stale.
            self._validate()  # codes index the codebooks below: refuse any out of range
            self.codebooks.flags.writeable = False
            self.codes.flags.writeable = False
            self._decoded = (key, self.dense_weight().reshape(Ct, -1))  # (c, i, j) order, as _conv_dense
        if direct_conv.usable(self.in_channels // self.groups):  # few input channels: compiled direct kernel
            if getattr(self, "_direct_w", (None,))[0] != (key, direct_conv.default_conv_isa()):  # once per weight, ISA
                self._direct_w = direct_conv.packed(key, self._decoded[1].reshape(Ct, -1, kh, kw), self.groups)
            return direct_conv.direct_conv2d(x, self._direct_w[1], self.bias, Ct, kh, kw, self.stride, self.padding,
                                              self.groups, relu, self._direct_w[0][1])
        return _conv_dense(x, self._decoded[1], self.bias, kh, kw, self.stride, self.padding, self.groups,
                           _COLS_BYTES, relu)
