"""int8 convolutions for CPUs with AVX-512 VNNI: calibrate on images, rewrite the Relax graph, fix the intrinsic.

What changes (``edgecv compile --int8``, ``edgecv tune --int8``):

- The graph runs channels-last (NHWC; ``ConvertLayout``), so four input channels sit side by side in memory.
  ReLU6 and leaky ReLU are first rewritten as maximum/minimum, which ``ConvertLayout`` passes through (it would
  wrap the importer's kernels for them in transposes).
- Each full convolution (not depthwise, input channels a multiple of 4) becomes: its input quantized to uint8
  (per tensor, affine: ``q = clip(round(x / scale) + zero, 0, 255)``, an element-wise tail the previous kernel
  absorbs), an int32 convolution of those bytes with int8 weights (per output channel, symmetric, pre-packed as
  ``[K/16, R, S, C/4, 16, 4]``: sixteen output channels by four input channels, the operand VNNI's ``vpdpbusd``
  takes), then ``(acc - zero * sum(w)) * scale_x * scale_w`` back to float32. Padding is the zero point, so the
  correction is exact at the borders. The first convolution (3 input channels) stays float32.
- Each depthwise convolution whose float32 input is large (``DEPTHWISE_UINT8_MIN_BYTES``, 2 MiB) reads that input
  as uint8, quantized the same way (the quantization fuses into the previous kernel's tail, so no float32 copy
  of the big tensor is ever stored), in a kernel of its own (``depthwise_uint8_nhwc``: padded with the zero
  point, ``sum(x * w * scale_x)`` in float32, minus ``zero * sum(w * scale_x)`` per channel); its output is
  float32 as before. Why: memory per model instance, and the edge process runs one instance per stream. In
  MobileNetV2 (the OID detector, 300x300) the early layers are large and the int8 1x1 "expand" convolutions wrote
  float32 for their depthwise successors: 150x150x96 (8.6 MB, the largest buffer of the Relax VM's static plan),
  75x75x144 (3.2 MB, twice), and the first convolution's 150x150x32 (2.9 MB). Those four go uint8 (four
  depthwise tasks and three changed tails to tune, 13 minutes); the next depthwise inputs (38x38x192, 1.1 MB,
  and smaller) stay float32: 2 MiB falls between the two groups. Measured on 2026-12-01 (AMD Zen 5, 2 cores,
  every new task tuned, 64 trials): the static plan 12.26 MB -> 5.61 MB per instance (largest buffer 2.16 MB,
  the uint8 150x150x96); the first inference adds 9.7 MB to the process instead of 23.0; ``edgecv run`` over
  vtest.avi peaks at 104.7 MB instead of 118.2 with one stream and 114.6 instead of 133.9 with two; per-frame
  latency 2.44 ms instead of 3.48 (medians, alternating in one process: these layers read a quarter of the
  bytes, and the new kernels had 64 trials where the old ones had 32); ``edgecv eval`` people precision 0.848,
  recall 0.880 (117 found, 21 false) against 0.854 and 0.880 (117, 20) before. The other depthwise
  convolutions stay float32: their buffers are small, and each would be one more task to tune.
- Activation ranges come from running the float32 graph in ONNX Runtime on calibration images (min/max per
  convolution input, full and depthwise); each range is found again in the Relax graph by its convolution's
  weights (a digest of their values), so the two graphs need not name anything alike.

MetaSchedule tensorizes the int8 convolutions with TVM's ``dot_16x4_vnni`` intrinsic. Two fixes make that work with
this TVM build: LLVM 22 declares ``llvm.x86.avx512.vpdpbusd.512`` on byte vectors (TVM's intrinsic passes int32
vectors, which fails LLVM's verifier), and MetaSchedule vectorizes a loop around the tensorized block, which
TVM's vectorizer rejects; such kernels are built with their vectorize annotations as serial loops (LLVM
vectorizes the simple ones itself, and the intrinsic is already a vector instruction).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VNNI_INTRIN = "dot_16x4_vnni"
VNNI_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")
PACK_K, PACK_C = 16, 4
# a depthwise convolution whose float32 input is at least this big reads it as uint8 (``depthwise_uint8``)
DEPTHWISE_UINT8_MIN_BYTES = 2 << 20


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def affine(self) -> tuple[float, int]:
        """(scale, zero point) mapping [low, high] (widened to contain 0) onto 0..255."""
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        if high - low < 1e-8:
            return 1.0, 0
        scale = (high - low) / 255.0
        return scale, int(np.clip(round(-low / scale), 0, 255))


def weight_digest(w_oihw: np.ndarray) -> str:
    """What identifies a convolution across the ONNX and the Relax graph: its weights, in OIHW order."""
    return hashlib.sha1(np.ascontiguousarray(w_oihw, dtype=np.float32).tobytes()).hexdigest()


def quantizable(w_oihw_shape: tuple[int, ...], groups: int) -> bool:
    return groups == 1 and len(w_oihw_shape) == 4 and w_oihw_shape[1] % PACK_C == 0


def depthwise(w_oihw_shape: tuple[int, ...], groups: int) -> bool:
    """One filter per input channel (channel multiplier 1): the kind ``depthwise_uint8`` computes."""
    return groups > 1 and len(w_oihw_shape) == 4 and w_oihw_shape[0] == groups and w_oihw_shape[1] == 1


def depthwise_uint8(input_shape: tuple[int, ...], dtype: str = "float32") -> bool:
    """Whether a depthwise convolution with this input reads it as uint8: a float32 input of at least
    ``DEPTHWISE_UINT8_MIN_BYTES`` (the early, high-resolution layers, whose float32 copies dominate the memory plan)."""
    return dtype == "float32" and 4 * int(np.prod(input_shape)) >= DEPTHWISE_UINT8_MIN_BYTES


# ---- calibration (ONNX Runtime on the float32 graph) ----

def calibrate(onnx_path: Path, input_name: str, inputs, log=lambda m: None) -> dict[str, Range]:
    """Per quantizable convolution and per depthwise one (keyed by ``weight_digest``): the range its input took on
    ``inputs``. (Every depthwise input is recorded; ``quantize_module`` picks the large ones by their shapes.)"""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = {init.name: init for init in model.graph.initializer}
    watched: dict[str, list[str]] = {}  # tensor name -> digests of the convolutions reading it
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if quantizable(w.shape, groups) or depthwise(w.shape, groups):
            watched.setdefault(node.input[0], []).append(weight_digest(w))
    outputs = {o.name for o in model.graph.output}
    for name in watched:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = list(watched)
    low = {n: np.inf for n in names}
    high = {n: -np.inf for n in names}
    count = 0
    for x in inputs:
        for name, value in zip(names, session.run(names, {input_name: x})):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
        count += 1
    if not count:
        raise ValueError("no calibration inputs")
    log(f"calibrated {sum(len(v) for v in watched.values())} convolution inputs on {count} images")
    ranges: dict[str, Range] = {}
    for name, digests in watched.items():
        for digest in digests:
            old = ranges.get(digest)
            ranges[digest] = Range(low[name], high[name]) if old is None else \
                Range(min(old.low, low[name]), max(old.high, high[name]))
    return ranges


DEFAULT_CALIBRATION = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def calibration_inputs(source: str | None, input_spec, count: int = 32, every: int = 25, first: int = 12
                       ) -> list[np.ndarray]:
    """Model inputs for calibration: frames ``first``, ``first + every``, ... of a video (all images of a folder or
    glob), at most ``count``, preprocessed as the artifact will preprocess them on the device. The defaults read
    vtest.avi's frames 12, 37, 62 ... 787: none of them is in the labelled set ``edgecv eval`` scores (every
    30th frame), so calibration never sees the images the accuracy is measured on."""
    import threading

    from edgecv.edge.errors import EdgecvError
    from edgecv.edge.preprocess import preprocess
    from edgecv.edge.sources import open_source

    source = source or DEFAULT_CALIBRATION
    if source == DEFAULT_CALIBRATION and not Path(source).is_file():
        raise EdgecvError(f"no calibration images: {source} is missing",
                          "apt-get install opencv-doc, or pass --calibration VIDEO|FOLDER|GLOB")
    opened = open_source(source)
    if opened.live:
        raise EdgecvError(f"calibration source {source} is a live source", "pass a video file, folder or glob")
    step, first = (1, 0) if type(opened).__name__ == "ImageFolderSource" else (every, first % every)
    inputs = []
    try:
        for frame in opened.frames(threading.Event()):
            if frame.index % step == first:
                inputs.append(preprocess(frame.image, input_spec)[0].copy())
            if len(inputs) >= count:
                break
    finally:
        opened.close()
    if not inputs:
        raise EdgecvError(f"no frames read from calibration source {source}", "pass a readable video or images")
    return inputs


def calibration_id(source: str | None) -> str:
    """What the calibration read, by content (part of the compile cache key)."""
    import glob

    from edgecv.edge.artifact import sha256_file

    source = source or DEFAULT_CALIBRATION
    path = Path(source)
    files = sorted(p for p in path.iterdir()) if path.is_dir() else [path] if path.is_file() else \
        sorted(Path(p) for p in glob.glob(source))
    return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}" for f in files if f.is_file()).encode()).hexdigest()


def check_int8_target(preset, host_flags: frozenset[str]) -> None:
    """int8 needs AVX-512 VNNI: on this machine (target x86_64) or the board a named x86 preset describes."""
    from edgecv.edge.errors import TargetError

    fix = "compile without --int8, or use --target x86_64 on a CPU with AVX-512 VNNI, or --target cascadelake"
    if preset.arch != "x86_64":
        raise TargetError(f"--int8 is for x86 CPUs with AVX-512 VNNI; target {preset.name} is {preset.arch}", fix)
    if preset.name == "x86_64" and not set(VNNI_FLAGS) <= host_flags:
        raise TargetError("--int8 needs AVX-512 VNNI, which this CPU lacks ("
                          + ", ".join(sorted(set(VNNI_FLAGS) - host_flags)) + " missing)", fix)
    if preset.name != "x86_64" and not preset.vnni:
        raise TargetError(f"--int8 needs AVX-512 VNNI; target {preset.name} has none", fix)


# ---- the int8 convolution ----

def pack_weights(w_ohwi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OHWI float32 -> (packed int8 [K16, R, S, C/4, 16, 4], per-channel scales (Kp,), sum of int8 weights (Kp,)),
    output channels padded to a multiple of 16 with zeros."""
    k, r, s, c = w_ohwi.shape
    flat = np.abs(w_ohwi.reshape(k, -1)).max(axis=1)
    scale = np.where(flat > 0, flat / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w_ohwi / scale[:, None, None, None]), -127, 127).astype(np.int8)
    kp = -(-k // PACK_K) * PACK_K
    padded = np.zeros((kp, r, s, c), np.int8)
    padded[:k] = q
    packed = padded.reshape(kp // PACK_K, PACK_K, r, s, c // PACK_C, PACK_C).transpose(0, 2, 3, 4, 1, 5)
    scales = np.zeros(kp, np.float32)
    scales[:k] = scale
    return np.ascontiguousarray(packed), scales, padded.reshape(kp, -1).sum(axis=1, dtype=np.int32)


def _padded_with_zero_point(x, zero, padding, kernel, strides):
    """TE: uint8 NHWC ``x`` padded with ``zero[0]`` (the zero point, so the correction of the sum stays exact at the
    borders), and the output's (height, width) for a ``kernel`` (R, S) window moving by ``strides``."""
    from tvm import te, tirx

    n, h, wd, c = (int(v) for v in x.shape)
    top, left, bottom, right = padding
    (r, s), (sh, sw) = kernel, strides
    padded = te.compute((n, h + top + bottom, wd + left + right, c), lambda b, i, j, ch: tirx.if_then_else(
        tirx.all(i >= top, i < h + top, j >= left, j < wd + left), x[b, i - top, j - left, ch], zero[0]),
        name="pad_zero_point")
    return padded, ((h + top + bottom - r) // sh + 1, (wd + left + right - s) // sw + 1)


def conv2d_int8_nhwc(x, w, zero, strides, padding):
    """TE: uint8 NHWC input (padded with ``zero[0]``, the zero point) x packed int8 weights -> int32 NHWC."""
    from tvm import te

    n, c = int(x.shape[0]), int(x.shape[3])
    k16, r, s, _, _, _ = (int(v) for v in w.shape)
    sh, sw = strides
    padded, (oh, ow) = _padded_with_zero_point(x, zero, padding, (r, s), strides)
    rr, rs, rc = te.reduce_axis((0, r), "rr"), te.reduce_axis((0, s), "rs"), te.reduce_axis((0, c), "rc")
    return te.compute((n, oh, ow, k16 * PACK_K), lambda b, i, j, k: te.sum(
        padded[b, i * sh + rr, j * sw + rs, rc].astype("int32")
        * w[k // PACK_K, rr, rs, rc // PACK_C, k % PACK_K, rc % PACK_C].astype("int32"), axis=[rr, rs, rc]),
        name="conv2d_int8")


def depthwise_uint8_nhwc(x, w, zero, strides, padding):
    """TE: uint8 NHWC input (padded with ``zero[0]``, the zero point) x float32 weights ``[R, S, C]`` (already
    times the input's scale) -> float32 NHWC: ``sum(x * w)``. The caller subtracts ``zero * sum(w)`` per channel,
    exact at the borders too (the padding is the zero point)."""
    from tvm import te

    n, c = int(x.shape[0]), int(x.shape[3])
    r, s, _ = (int(v) for v in w.shape)
    sh, sw = strides
    padded, (oh, ow) = _padded_with_zero_point(x, zero, padding, (r, s), strides)
    rr, rs = te.reduce_axis((0, r), "rr"), te.reduce_axis((0, s), "rs")
    return te.compute((n, oh, ow, c), lambda b, i, j, ch: te.sum(
        padded[b, i * sh + rr, j * sw + rs, ch].astype("float32") * w[rr, rs, ch], axis=[rr, rs]),
        name="depthwise_uint8")


def quantize_module(mod, params: list, ranges: dict[str, Range], log=lambda m: None):
    """The imported module (weights as parameters of ``main``) -> (the int8 module, its parameters)."""
    import tvm
    from tvm import relax

    main = mod["main"]
    num_input = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else 1
    bound = {v: tvm.runtime.tensor(p.numpy() if hasattr(p, "numpy") else p)
             for v, p in zip(main.params[num_input:], params)}
    mod = tvm.transform.Sequential([
        relax.transform.BindParams("main", bound),
        relax.transform.FoldConstant(),  # ReLU6's bounds arrive as where(isnan(c), inf, c)
        _activations_as_ops(),
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
        relax.transform.FoldConstant(),
    ])(mod)
    rewriter = _int8_rewriter(mod, ranges)
    main = rewriter.visit_expr(mod["main"])
    mod = rewriter.builder_.get()  # with the int8 kernels' PrimFuncs
    mod["main"] = main
    mod = tvm.transform.Sequential([relax.transform.FoldConstant(), relax.transform.DeadCodeElimination(["main"])])(mod)
    log(f"int8: {rewriter.rewritten} convolutions quantized, {rewriter.depthwise} depthwise ones reading uint8 "
        f"inputs, {rewriter.kept} kept in float32")
    return lift_constants(mod, num_input)


def _activations_as_ops():
    """A pass: activations ``ConvertLayout`` can see through (else it wraps each in two transposes): the ONNX
    importer's ReLU6 (``call_tir`` of a ``maximum``/``minimum`` kernel with a scalar) as Relax's maximum/minimum,
    and leaky ReLU (no layout rule) as ``maximum(x, alpha * x)``, the same values for 0 <= alpha <= 1."""
    import re

    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    leaky = tvm.ir.Op.get("relax.nn.leakyrelu")
    ops = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}

    @relax.expr_functor.mutator
    class Activations(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op.same_as(leaky) and 0 <= float(call.attrs.alpha) <= 1:
                x = call.args[0]
                return relax.op.maximum(x, relax.op.multiply(x, relax.const(float(call.attrs.alpha), x.ty.dtype)))
            if call.op.same_as(call_tir) and isinstance(call.args[0], tvm.ir.GlobalVar):
                kind = re.fullmatch(r"(maximum|minimum)\d*", call.args[0].name_hint)
                args = list(call.args[1].fields) if hasattr(call.args[1], "fields") else []
                bound = self.lookup_binding(args[1]) if len(args) == 2 and isinstance(args[1], relax.Var) else None
                scalar = bound if bound is not None else args[1] if len(args) == 2 else None
                if kind and isinstance(scalar, tvm.ir.expr.Constant) and len(scalar.value.shape) == 0:
                    return ops[kind.group(1)](args[0], scalar)
            return call

    @tvm.transform.module_pass(opt_level=0, name="ActivationsAsOps")
    def transform(mod, _ctx):
        mod["main"] = Activations(mod).visit_expr(mod["main"])
        return relax.transform.DeadCodeElimination(["main"])(mod)

    return transform


def lift_constants(mod, num_input: int = 1):
    """Tensor constants of ``main`` back into parameters after its inputs (the params file, not the library)."""
    from tvm import relax

    values: list = []
    new_vars: list = []

    @relax.expr_functor.mutator
    class _Lift(relax.PyExprMutator):
        def visit_generic_const_(self, const):
            if len(const.value.shape) == 0:
                return const
            var = relax.Var(f"p{len(new_vars):04d}", const.ty)
            values.append(const.value)
            new_vars.append(var)
            return var

    main = mod["main"]
    body = _Lift(mod).visit_expr(main.body)
    func = relax.Function([*main.params[:num_input], *new_vars], body, main.ret_ty, main.is_pure,
                          main.attrs)
    mod["main"] = func.with_attr("num_input", num_input)
    return mod, values


def register_vnni_intrinsic() -> None:
    """TVM's ``dot_16x4_vnni`` with the operand types LLVM 21+ declares for vpdpbusd (64 x i8, not 16 x i32).
    Call after ``tvm.s_tir.tensor_intrin.x86`` is imported, in every process that schedules or builds."""
    import tvm
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin import x86
    from tvm.script import tirx as T

    if tvm.target.codegen.llvm_version_major() < 21:
        return

    @T.prim_func(s_tir=True)
    def vnni_bytes(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                   c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            a_bytes = T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), 16),
                                    dtype="uint8x64")
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), c.vload([0], dtype="int32x16"),
                a_bytes, b.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(VNNI_INTRIN, x86.dot_product_16x4_u8i8i32_desc, vnni_bytes, override=True)


def serial_tensorized(mod):
    """``mod`` with the vectorize annotations of its VNNI-tensorized kernels made serial loops (see above)."""
    import tvm

    for gv, func in list(mod.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc) and "vpdpbusd" in func.script():
            one = tvm.tirx.transform.VectorizeLoop(False)(tvm.IRModule({gv: func}))
            mod[gv] = one[gv]
    return mod


def _int8_rewriter(mod, ranges: dict[str, Range]):
    """A Relax mutator replacing each quantizable NHWC convolution with its constant weights by the int8 one, and
    each depthwise one with a large input by the uint8-input one."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Int8Convolutions(relax.PyExprMutator):
        def __init__(self):
            super().__init__(mod)
            self.rewritten = 0
            self.depthwise = 0
            self.kept = 0

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
                return call
            x, weight, attrs = call.args[0], call.args[1], call.attrs
            rng = w = None
            if isinstance(weight, tvm.ir.expr.Constant) and attrs.data_layout == "NHWC" and attrs.kernel_layout == "OHWI" \
                    and all(int(d) == 1 for d in attrs.dilation):
                w = weight.value.numpy()
                w_oihw, groups = w.transpose(0, 3, 1, 2), int(attrs.groups)
                if w.dtype == np.float32 and (quantizable(w_oihw.shape, groups)
                                              or (depthwise(w_oihw.shape, groups) and _large_input(x))):
                    rng = ranges.get(weight_digest(w_oihw))
            if rng is None:
                self.kept += 1
                return call
            strides, padding = [int(v) for v in attrs.strides], [int(v) for v in attrs.padding]
            if int(attrs.groups) > 1:
                self.depthwise += 1
                return _uint8_depthwise(self.builder_, x, w, rng, strides, padding)
            self.rewritten += 1
            return _int8_convolution(self.builder_, x, w, rng, strides, padding)

    def _large_input(x) -> bool:
        """A float32 input of static shape big enough for ``depthwise_uint8``."""
        ty = x.ty
        return isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr) \
            and all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values) \
            and depthwise_uint8(tuple(int(d) for d in ty.shape.values), str(ty.dtype))

    return Int8Convolutions()


def _const(array: np.ndarray):
    """A Relax constant holding ``array`` (lifted into a parameter by ``lift_constants``)."""
    import tvm
    from tvm import relax

    return relax.const(tvm.runtime.tensor(array))


def _quantize(x, scale_x: float, zero: int):
    """x (float32) -> uint8 bytes, ``clip(round(x / scale) + zero, 0, 255)``: element-wise, so the kernel producing
    x absorbs it and x itself is never stored. The scalars are 1-element tensors: parameters like the weights, so
    a kernel (and its tuning record) is the same whatever the calibration found."""
    from tvm import relax

    q = relax.op.add(relax.op.round(relax.op.multiply(x, _const(np.array([1.0 / scale_x], np.float32)))),
                     _const(np.array([zero], np.float32)))
    return relax.op.astype(relax.op.clip(q, 0, 255), "uint8")


def _uint8_depthwise(bb, x, w_ohwi: np.ndarray, rng: Range, strides, padding):
    """quantize x -> depthwise convolution of the bytes with float32 weights -> float32, emitted with ``bb``.

    Float32 arithmetic, not int32 with int8 weights: VNNI's dot product sums four neighbouring bytes of one
    output, while a depthwise window's nine taps are a channel apart in NHWC, so integer arithmetic would be
    widening multiplies, no faster than a byte-to-float conversion and an FMA on a kernel bound by memory; and
    float32 weights (times the input's scale) add no rounding of their own, where int8 ones would (0.3-0.8% of
    each filter, per channel, on the OID detector's four). Only the input is rounded, as for full convolutions."""
    from tvm import relax

    scale_x, zero = rng.affine()
    w = np.ascontiguousarray(w_ohwi[:, :, :, 0].transpose(1, 2, 0) * np.float32(scale_x), dtype=np.float32)  # RSC
    q = bb.emit(_quantize(x, scale_x, zero))
    acc = bb.emit(bb.call_te(depthwise_uint8_nhwc, q, _const(w), _const(np.array([zero], np.uint8)), strides=strides,
                             padding=padding, primfunc_name_hint="depthwise_uint8"))
    return relax.op.subtract(acc, _const((zero * w.sum(axis=(0, 1), dtype=np.float64)).astype(np.float32)))


def _int8_convolution(bb, x, w_ohwi: np.ndarray, rng: Range, strides, padding):
    """quantize x -> int8 convolution -> float32, emitted with ``bb``; the same value as the float convolution."""
    from tvm import relax

    scale_x, zero = rng.affine()
    packed, scale_w, wsum = pack_weights(w_ohwi)
    q = bb.emit(_quantize(x, scale_x, zero))
    acc = bb.emit(bb.call_te(conv2d_int8_nhwc, q, _const(packed), _const(np.array([zero], np.uint8)), strides=strides,
                             padding=padding, primfunc_name_hint="conv2d_int8"))
    y = relax.op.multiply(relax.op.astype(relax.op.subtract(acc, _const((zero * wsum).astype(np.int32))), "float32"),
                          _const((scale_x * scale_w).astype(np.float32)))
    k = w_ohwi.shape[0]
    if k != packed.shape[0] * PACK_K:
        y = relax.op.strided_slice(bb.emit(y), axes=[3], begin=[0], end=[k])
    return y
