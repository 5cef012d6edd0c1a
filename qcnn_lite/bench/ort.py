"""ONNX Runtime as a measured peer engine: the same networks and layers, fp32 and static int8.

* :func:`to_onnx` -- an ONNX graph built directly from a :class:`~qcnn_lite.nn.engine.Network`'s spec and
  its dense float weights, with each LRN as ONNX's ``LRN`` op or as eight elementary ops (torch's
  exporter is not used: it turns an LRN into some thirty nodes, among them an ``If``). ORT's own LRN
  kernel is the slow form, several times slower than the elementary ops (figures in
  docs/measurements.md), so the benchmark columns use the elementary ops;
* :func:`layer_onnx` -- one conv (with its ReLU when fused) or one fc layer as a graph, for ``bench-layers``;
* :func:`session` -- an ``InferenceSession`` on one thread, sequential, all graph optimizations;
* :func:`quantize_static_int8` -- ORT's static int8 quantization (per-channel int8 weights, activations
  calibrated on a few images) in the ``QDQ`` or ``QOperator`` format; :func:`fastest_int8` builds both
  and keeps the faster on this machine;
* :func:`network_fns` / :func:`layer_fns` -- the callables a benchmark times, or ``"n/a"`` for each
  engine when onnx or onnxruntime is not installed (as the faiss column does).

onnx and onnxruntime are imported lazily, inside the functions that need them, so importing this
module never requires them; :func:`available` says whether they are there. Networks and layers are
read through their public attributes only (``spec``, ``params``, ``shapes()``; ``weight``, ``bias``,
``stride``, ``padding``, ``groups``), so this module imports nothing else from the package.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Sequence

import numpy as np

if TYPE_CHECKING:  # annotations only: importing this module needs neither onnx nor the rest of the package
    import onnx
    import onnxruntime

    from qcnn_lite.nn.engine import Network
    from qcnn_lite.nn.layers import Conv2d, Linear

__all__ = ["ORT_FP32", "ORT_INT8", "FORMATS", "LRN_IMPLS", "OPSET", "available", "versions", "to_onnx",
           "layer_onnx", "session", "run", "quantize_static_int8", "time_session", "fastest_int8", "network_fns",
           "layer_fns"]

ORT_FP32 = "ort-fp32"  # engine labels, as the benchmark tables name their columns
ORT_INT8 = "ort-int8-static"
FORMATS = ("QDQ", "QOperator")
# 17: per-channel Quantize/DequantizeLinear (the QDQ format) needs >= 13; IR version 8 carries 17.
OPSET = 17
_INPUT, _OUTPUT = "input", "output"
Format = Literal["QDQ", "QOperator"]
LRNImpl = Literal["native", "ops"]
LRN_IMPLS = ("native", "ops")
# What static int8 quantizes: the conv/fc layers and the ops that can run on their 8-bit outputs.
# Not the elementary ops of an LRN (Mul, AveragePool, Div...): 8-bit squares and powers would wreck it.
_INT8_OPS = ["Conv", "Gemm", "MaxPool", "Relu", "Flatten"]


def available() -> bool:
    """Whether both onnx (to build graphs) and onnxruntime (to run and quantize them) import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401  (imports onnxruntime itself)
    except ImportError:
        return False
    return True


def versions() -> dict[str, str | None]:
    """onnx and onnxruntime versions (None where not installed), to record beside the figures."""
    out: dict[str, str | None] = {}
    for mod in ("onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


# --------------------------------------------------------------------------- graph building
class _Graph:
    """Nodes and initializers of a graph under construction, every tensor and node name unique."""

    def __init__(self) -> None:
        import onnx

        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], base: str, out: str | None = None, **attrs: Any) -> str:
        """Append one node; its (single) output is ``out`` or a fresh name from ``base``."""
        out = out or self.fresh(base)
        self.names.add(out)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=self.fresh(f"{base}_{op}"), **attrs))
        return out

    def model(self, name: str, in_shape: Sequence[int | str], out_shape: Sequence[int | str],
              opset: int) -> onnx.ModelProto:
        import onnx

        h = self.helper
        graph = h.make_graph(self.nodes, name,
                             [h.make_tensor_value_info(_INPUT, onnx.TensorProto.FLOAT, list(in_shape))],
                             [h.make_tensor_value_info(_OUTPUT, onnx.TensorProto.FLOAT, list(out_shape))],
                             self.inits)
        m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], producer_name="qcnn_lite")
        # the IR version of opset 17 rather than this onnx's newest, so that older runtimes load the model too
        m.ir_version = min(onnx.IR_VERSION, 8)
        onnx.checker.check_model(m)  # in memory: models > 2 GiB would need the path form (none here)
        return m


def _is_conv(layer: Any) -> bool:
    """A dense conv (weight (O, C/g, kh, kw)) rather than a dense fc layer (weight (out, in))."""
    w = getattr(layer, "weight", None)
    if not isinstance(w, np.ndarray) or w.ndim not in (2, 4):
        raise TypeError(f"expected a dense Conv2d or Linear, got {type(layer).__name__}")
    return w.ndim == 4


def _conv(g: _Graph, x: str, layer: Conv2d, base: str, relu: bool, out: str | None) -> str:
    """Conv (+ Relu, which ORT fuses into its Conv kernel) from a dense Conv2d, weight (O, C/g, kh, kw)."""
    p = layer.padding
    y = g.node("Conv", [x, g.const(f"{base}.weight", layer.weight), g.const(f"{base}.bias", layer.bias)], base,
               None if relu else out, kernel_shape=list(layer.kernel_size), strides=[layer.stride] * 2,
               pads=[p, p, p, p], group=layer.groups)
    return g.node("Relu", [y], f"{base}_relu", out) if relu else y


def _fc(g: _Graph, x: str, layer: Linear, base: str, out: str | None) -> str:
    """Gemm with transB=1: the weight stays (out, in) as Linear holds it, and ORT quantizes it per row."""
    return g.node("Gemm", [x, g.const(f"{base}.weight", layer.weight), g.const(f"{base}.bias", layer.bias)], base, out,
                  transB=1)


def _lrn(g: _Graph, x: str, L: dict, base: str, out: str | None, impl: LRNImpl) -> str:
    """The engine's LRN, x / (k + alpha/size * sum of x^2 over ``size`` channels)^beta, as ONNX nodes.

    ONNX's LRN divides alpha by size too, so alpha passes unchanged (no Caffe-vs-TF rescaling). The
    windows agree for odd sizes only: channel c sums c - size//2 .. c - size//2 + size - 1 in the
    engine (Caffe, torch) but c - (size-1)//2 .. c + ceil((size-1)/2) in ONNX, one channel later when
    size is even -- and ORT's CPU LRN kernel rejects even sizes outright.

    ``impl`` "native": one ``LRN`` node (odd sizes). "ops": the window sum as an average pool along
    the channels, then scale, shift, power and divide -- several times faster in ORT 1.32 than its own
    LRN kernel (docs/measurements.md). Even sizes always take "ops".
    """
    size, alpha = int(L.get("size", 5)), float(L.get("alpha", 1e-4))
    beta, k = float(L.get("beta", 0.75)), float(L.get("k", 1.0))
    if impl not in LRN_IMPLS:
        raise ValueError(f"lrn must be one of {', '.join(LRN_IMPLS)}, got {impl!r}")
    if size % 2 and impl == "native":
        return g.node("LRN", [x], base, out, size=size, alpha=alpha, beta=beta, bias=k)
    # mean of the squares over the window: a 3-D average pool along the channels of (n, 1, C, H, W)
    axis = g.const(f"{base}_axis", np.array([1], np.int64))
    sq = g.node("Unsqueeze", [g.node("Mul", [x, x], f"{base}_sq"), axis], f"{base}_5d")
    avg = g.node("AveragePool", [sq], f"{base}_avg", kernel_shape=[size, 1, 1],
                 pads=[size // 2, 0, 0, (size - 1) // 2, 0, 0], count_include_pad=1)  # zeros count: sum / size
    win = g.node("Squeeze", [avg, axis], f"{base}_win")
    scaled = g.node("Mul", [win, g.const(f"{base}_alpha", np.array(alpha, np.float32))], f"{base}_scaled")
    d = g.node("Add", [scaled, g.const(f"{base}_k", np.array(k, np.float32))], f"{base}_d")
    if beta == 0.75:  # every network here: d^0.75 = sqrt(d) * sqrt(sqrt(d)), cheaper than Pow
        r1 = g.node("Sqrt", [d], f"{base}_sqrt")
        dp = g.node("Mul", [r1, g.node("Sqrt", [r1], f"{base}_qrt")], f"{base}_dpow")
    else:
        dp = g.node("Pow", [d, g.const(f"{base}_beta", np.array(beta, np.float32))], f"{base}_dpow")
    return g.node("Div", [x, dp], base, out)


def to_onnx(net: Network, batch: int | None = None, opset: int = OPSET, lrn: LRNImpl = "native") -> onnx.ModelProto:
    """The dense network as an ONNX model: input ``input`` (n, C, H, W) float32 -> ``output`` (n, ...).

    ``batch``: a fixed batch size, or None for a symbolic one (``n``). ``lrn``: ONNX's ``LRN`` op
    ("native") or elementary ops ("ops", faster in ORT; see :func:`_lrn`). Dropout is left out (the
    identity at test time); a conv followed by a ReLU becomes Conv + Relu, which ORT fuses.
    Raises ValueError for a quantized network (its layers have no dense weight to export here).
    """
    if net.is_quantized:
        raise ValueError(f"{net.name}: to_onnx needs a dense network (Conv2d/Linear layers)")
    g = _Graph()
    shapes = [tuple(net.input_shape)] + net.shapes()
    x, n = _INPUT, ("n" if batch is None else int(batch))
    g.names.add(x)
    spec, last = net.spec, len(net.spec) - 1
    # the last layer that produces a new tensor writes ``output`` directly (dropout is no node)
    while last >= 0 and spec[last]["type"] == "dropout":
        last -= 1
    i = 0
    while i < len(spec):
        L, t = spec[i], spec[i]["type"]
        fused = t == "conv" and i + 1 < len(spec) and spec[i + 1]["type"] == "relu"
        out = _OUTPUT if i == last or (fused and i + 1 == last) else None
        base = L.get("name", f"{i}_{t}")
        if t in ("conv", "fc") and L["name"] not in net.params:
            raise ValueError(f"network {net.name!r} has no parameters for layer {L['name']!r}")
        if t == "conv":
            x = _conv(g, x, net.params[L["name"]], base, fused, out)
            i += 2 if fused else 1
            continue
        if t == "fc":
            if len(shapes[i]) > 1:  # the engine flattens a map that reaches an fc layer unflattened
                x = g.node("Flatten", [x], f"{base}_flatten", axis=1)
            x = _fc(g, x, net.params[L["name"]], base, out)
        elif t == "relu":
            x = g.node("Relu", [x], base, out)
        elif t == "lrn":
            x = _lrn(g, x, L, base, out, lrn)
        elif t == "maxpool":
            x = g.node("MaxPool", [x], base, out, kernel_shape=[L["kernel"]] * 2, strides=[L["stride"]] * 2,
                       ceil_mode=int(bool(L.get("ceil", False))))
        elif t == "flatten":
            x = g.node("Flatten", [x], base, out, axis=1)
        elif t == "softmax":
            x = g.node("Softmax", [x], base, out, axis=-1)
        elif t != "dropout":  # pragma: no cover - Network validates its spec
            raise ValueError(f"layer {i}: unknown type {t!r}")
        i += 1
    if x != _OUTPUT:  # a spec of only dropout layers (or none): the output is the input
        g.node("Identity", [x], "identity", _OUTPUT)
    return g.model(net.name, (n, *net.input_shape), (n, *shapes[-1]), opset)


def layer_onnx(layer: Conv2d | Linear, input_shape: Sequence[int], relu: bool = False, batch: int | None = 1,
               opset: int = OPSET) -> onnx.ModelProto:
    """One dense layer as an ONNX model, for per-layer timing.

    ``input_shape`` is the layer's input without the batch axis: (C, H, W) for a conv, (in,) for an
    fc layer (a (C, H, W) fc input is flattened first, as the engine does). ``relu`` appends a ReLU
    (a conv's fused ReLU, so both engines do the same work).
    """
    g = _Graph()
    g.names.add(_INPUT)
    in_shape = tuple(int(v) for v in input_shape)
    n = "n" if batch is None else int(batch)
    if _is_conv(layer):
        if len(in_shape) != 3 or in_shape[0] != layer.in_channels:
            raise ValueError(f"a conv with {layer.in_channels} input channels needs an input "
                             f"({layer.in_channels}, H, W), got {in_shape}")
        _conv(g, _INPUT, layer, "conv", relu, _OUTPUT)
        oh, ow = ((s + 2 * layer.padding - k) // layer.stride + 1 for s, k in zip(in_shape[1:], layer.kernel_size))
        out_shape: tuple[int | str, ...] = (n, layer.out_channels, oh, ow)
    else:
        if int(np.prod(in_shape)) != layer.in_features:
            raise ValueError(f"an fc layer with {layer.in_features} inputs cannot take {in_shape}")
        x = g.node("Flatten", [_INPUT], "flatten", axis=1) if len(in_shape) > 1 else _INPUT
        y = _fc(g, x, layer, "fc", None if relu else _OUTPUT)
        if relu:
            g.node("Relu", [y], "fc_relu", _OUTPUT)
        out_shape = (n, layer.out_features)
    return g.model(type(layer).__name__, (n, *in_shape), out_shape, opset)


# --------------------------------------------------------------------------- running
def session(model: onnx.ModelProto | bytes | str | os.PathLike, threads: int = 1) -> onnxruntime.InferenceSession:
    """An ORT CPU session: ``threads`` intra-op threads (1: the work runs in the calling thread, so
    ``time.thread_time`` measures it), one inter-op thread, sequential execution, all graph optimizations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: warnings about quantized models' leftover initializers are noise here
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    src = os.fspath(src) if isinstance(src, Path) else src
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def run(sess: onnxruntime.InferenceSession, x: np.ndarray) -> np.ndarray:
    """The session's single output for x (n, ...) float32."""
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


# --------------------------------------------------------------------------- static int8
def _has_vnni() -> bool:
    """x86 VNNI (AVX512-VNNI or AVX-VNNI): u8 x s8 products accumulate without the 16-bit saturation
    of VPMADDUBSW, so 8-bit weights need no reduced range."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _images(calib_images: np.ndarray | Iterable[np.ndarray], input_shape: Sequence[int | str]) -> list[np.ndarray]:
    """Calibration batches (1, ...) float32 from an array (n, ...) or an iterable of single images."""
    want = tuple(int(v) for v in input_shape[1:])
    out = []
    for img in calib_images:
        a = np.asarray(img, dtype=np.float32)
        if a.shape == want:
            a = a[None]
        if a.shape[1:] != want or a.shape[0] != 1:
            raise ValueError(f"calibration images must be {want} each, got {a.shape}")
        out.append(np.ascontiguousarray(a))
    if not out:
        raise ValueError("static quantization needs at least one calibration image")
    return out


def _input_shape(model: onnx.ModelProto) -> tuple[int | str, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def quantize_static_int8(model_fp32: onnx.ModelProto, calib_images: np.ndarray | Iterable[np.ndarray],
                         fmt: Format = "QDQ", reduce_range: bool | None = None,
                         keep_float_softmax: bool = True) -> onnx.ModelProto:
    """ORT static int8 quantization of an fp32 model from :func:`to_onnx` or :func:`layer_onnx`.

    Weights are per-channel QInt8 (symmetric); activations QUInt8 (asymmetric), the pairing ORT
    recommends on x86, with ranges from MinMax calibration over ``calib_images`` ((n, C, H, W) or
    single (C, H, W) images; a handful such as 8 give the ranges, and values beyond them are clipped
    later, so calibrate on inputs like those to be run). ``fmt``: "QDQ" (Quantize/
    DequantizeLinear pairs around float ops, which ORT fuses into integer kernels) or "QOperator"
    (QLinearConv, QGemm, ... nodes). ``reduce_range`` None: 7-bit weights only on an x86 CPU
    without VNNI, as ORT advises there. Only Conv, Gemm, MaxPool, Relu and Flatten are quantized: an
    LRN stays float between a DequantizeLinear and a QuantizeLinear. ``keep_float_softmax``: leave a
    final Softmax in float -- 8-bit probabilities tie on near-equal classes and would change the top-1
    by rounding alone.
    Intermediate files live in a temporary directory that is removed on return.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    batches = _images(calib_images, _input_shape(model_fp32))
    name = model_fp32.graph.input[0].name

    class _Reader(CalibrationDataReader):
        """Feeds the calibration images one at a time (batch 1, as the benchmarks run)."""

        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {name: b}

        def rewind(self) -> None:
            self._it = iter(batches)

    ops = _INT8_OPS if keep_float_softmax else _INT8_OPS + ["Softmax"]
    if reduce_range is None:
        import platform

        reduce_range = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86") and not _has_vnni()
    with tempfile.TemporaryDirectory(prefix="qcnn-ort-") as tmp:
        src, pre, dst = (Path(tmp) / f for f in ("fp32.onnx", "fp32-pre.onnx", "int8.onnx"))
        onnx.save(model_fp32, src)
        # shape inference + ORT's basic fusions first, as ORT advises: a tensor of unknown shape is not quantized.
        # ONNX's shape inference covers these plain CNN graphs; the symbolic one would need sympy.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), _Reader(),
                        quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                        per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=ops)
        return onnx.load(dst)


def time_session(sess: onnxruntime.InferenceSession, x: np.ndarray, repeat: int = 10,
                 warmup: int = 2) -> dict[str, float]:
    """Median thread CPU time and median/min/max wall time in ms of ``repeat`` runs on x after ``warmup``.

    Thread CPU time counts only this thread's work (a one-thread session runs in the caller), so it
    leaves out the time other processes held the core on a shared machine.
    """
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    cpu, wall = [], []
    for _ in range(repeat):
        c0, t0 = time.thread_time(), time.perf_counter()
        sess.run(None, feed)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return {"cpu_median_ms": statistics.median(cpu), "median_ms": statistics.median(wall), "min_ms": min(wall),
            "max_ms": max(wall), "runs": repeat}


def fastest_int8(model_fp32: onnx.ModelProto, calib_images: np.ndarray | Iterable[np.ndarray],
                 x: np.ndarray | None = None, repeat: int = 7, threads: int = 1,
                 ) -> tuple[str, onnx.ModelProto, dict[str, dict[str, float]]]:
    """Quantize in both formats, time each on x (default: the first calibration image) and return
    (format name, its model, {format: timing of :func:`time_session`}).

    The two are timed in alternation, one run each per round, so that load from other processes
    hits both alike; the faster is the one with the lower median thread CPU time.
    """
    images = _images(calib_images, _input_shape(model_fp32))
    x = images[0] if x is None else x
    feed_x = np.ascontiguousarray(x, dtype=np.float32)
    models_ = {fmt: quantize_static_int8(model_fp32, images, fmt) for fmt in FORMATS}
    sessions = {fmt: session(m, threads) for fmt, m in models_.items()}
    feeds = {fmt: {s.get_inputs()[0].name: feed_x} for fmt, s in sessions.items()}
    for fmt, s in sessions.items():  # warm-up: first runs allocate and pack weights
        s.run(None, feeds[fmt])
        s.run(None, feeds[fmt])
    cpu: dict[str, list[float]] = {f: [] for f in FORMATS}
    wall: dict[str, list[float]] = {f: [] for f in FORMATS}
    for r in range(repeat):
        for fmt in (FORMATS if r % 2 == 0 else FORMATS[::-1]):  # alternate who goes first
            c0, t0 = time.thread_time(), time.perf_counter()
            sessions[fmt].run(None, feeds[fmt])
            wall[fmt].append((time.perf_counter() - t0) * 1e3)
            cpu[fmt].append((time.thread_time() - c0) * 1e3)
    times = {f: {"cpu_median_ms": statistics.median(cpu[f]), "median_ms": statistics.median(wall[f]),
                 "min_ms": min(wall[f]), "max_ms": max(wall[f]), "runs": repeat} for f in FORMATS}
    best = min(FORMATS, key=lambda f: times[f]["cpu_median_ms"])
    return best, models_[best], times


# --------------------------------------------------------------------------- benchmark hooks
def _calib(rng: np.random.Generator, shape: Sequence[int], n: int) -> np.ndarray:
    return rng.standard_normal((n, *shape), dtype=np.float32)


def network_fns(net: Network, x: np.ndarray, calib_images: np.ndarray | None = None, fmt: str = "fastest",
                threads: int = 1, seed: int = 0, lrn: LRNImpl = "ops") -> dict[str, Callable[[], Any] | str]:
    """{``ort-fp32``: fn, ``ort-int8-static``: fn} running x (1, C, H, W) through the dense network in ORT,
    or "n/a" for both when onnx/onnxruntime are not installed (bench tables print "n/a").

    ``calib_images`` default: 8 seeded standard-normal images (synthetic weights see synthetic inputs;
    the ranges change the int8 outputs, not the time).
    ``fmt``: "QDQ", "QOperator" or "fastest" (:func:`fastest_int8`). The int8 function carries the
    format it used as ``fn.fmt`` and, for "fastest", both formats' timings as ``fn.format_times``.
    ``lrn``: as in :func:`to_onnx`; the default "ops" is ORT's faster form. Both functions carry it as ``fn.lrn``.
    """
    if not available():
        return {ORT_FP32: "n/a", ORT_INT8: "n/a"}
    calib = _calib(np.random.default_rng(seed), net.input_shape, 8) if calib_images is None else calib_images
    fp32 = to_onnx(net, batch=1, lrn=lrn)
    fns = _int8_and_fns(fp32, calib, fmt, x, threads)
    for fn in fns.values():
        fn.lrn = lrn  # type: ignore[union-attr]
    return fns


def layer_fns(layer: Conv2d | Linear, x: np.ndarray, relu: bool = False, calib_images: np.ndarray | None = None,
              fmt: str = "QDQ", threads: int = 1, seed: int = 0) -> dict[str, Callable[[], Any] | str]:
    """As :func:`network_fns` for one layer on x (1, C, H, W) or (1, in): the columns of ``bench-layers``.

    The int8 graph takes and returns float32 (quantize the input, integer conv/Gemm, dequantize the
    output), so its time includes those two conversions, as a drop-in layer would pay them.
    """
    if not available():
        return {ORT_FP32: "n/a", ORT_INT8: "n/a"}
    shape = x.shape[1:]
    calib = _calib(np.random.default_rng(seed), shape, 8) if calib_images is None else calib_images
    return _int8_and_fns(layer_onnx(layer, shape, relu), calib, fmt, x, threads)


def _int8_and_fns(fp32: onnx.ModelProto, calib: np.ndarray, fmt: str, x: np.ndarray,
                  threads: int) -> dict[str, Callable[[], Any] | str]:
    """The fp32 model and its int8 twin in ``fmt`` ("fastest": the faster of both, timed here) as callables."""
    times = None
    if fmt == "fastest":
        fmt, int8, times = fastest_int8(fp32, calib, x, threads=threads)
    elif fmt in FORMATS:
        int8 = quantize_static_int8(fp32, calib, fmt)  # type: ignore[arg-type]
    else:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)} or 'fastest', got {fmt!r}")
    fns = _fns(fp32, int8, fmt, x, threads)
    fns[ORT_INT8].format_times = times  # type: ignore[union-attr]
    return fns


def _fns(fp32: onnx.ModelProto, int8: onnx.ModelProto, fmt: str, x: np.ndarray,
         threads: int) -> dict[str, Callable[[], Any] | str]:
    s32, s8 = session(fp32, threads), session(int8, threads)
    feed32 = {s32.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    feed8 = {s8.get_inputs()[0].name: feed32[s32.get_inputs()[0].name]}

    def f32() -> Any:
        return s32.run(None, feed32)

    def i8() -> Any:
        return s8.run(None, feed8)

    i8.fmt = fmt  # type: ignore[attr-defined]
    return {ORT_FP32: f32, ORT_INT8: i8}
