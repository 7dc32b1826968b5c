"""int8 convolutions: calibrate on images, rewrite the Relax graph, tensorize with the CPU's dot product.

What changes (``edgecv compile --int8``, ``edgecv tune --int8``):

- The graph runs channels-last (NHWC; ``ConvertLayout``), so four input channels sit side by side in memory.
  ReLU6 and leaky ReLU are first rewritten as maximum/minimum, which ``ConvertLayout`` passes through (it would
  wrap the importer's kernels for them in transposes).
- Each full convolution (not depthwise, input channels a multiple of 4) becomes: its input quantized to bytes
  (per tensor, affine: ``q = clip(round(x / scale) + zero, 0, 255)``, shifted by -128 where the kernel takes
  signed bytes; an element-wise tail the previous kernel absorbs), an int32 convolution of those bytes with int8
  weights (per output channel, symmetric, pre-packed as ``[K/lanes, R, S, C/4, lanes, 4]``: the operand of the
  CPU's dot product, ``lanes`` output channels by four input channels), then ``(acc - zero * sum(w)) * scale_x *
  scale_w`` back to float32. Padding is the zero point, so the correction is exact at the borders. The first
  convolution (3 input channels) stays float32.
- With ``--conv-kernels direct`` (the default) each int8 convolution is a direct kernel, as the float32 ones are
  (``direct``): it computes tiles of ``run`` output pixels by a block of output channels (``INT8_BLOCK`` dot
  products wide) whose int32 sums stay in registers while the reduction streams weights and broadcast bytes past
  them, the last tile of a row reading the row's last pixel again where it runs past the edge; the tile comes
  from the same register model (``DirectKernels.int8``) and the schedule is fixed (``leftovers.int8_schedule``),
  not searched. With ``--conv-kernels metaschedule`` the output is plain NHWC and the schedules come from the
  tuning records.
- The kernel is chosen by the target (``INT8_KERNELS``, ``int8_kernel``): AVX-512 VNNI's or AVX-VNNI's vpdpbusd,
  AVX-512BW's or AVX2's vpmaddubsw + vpmaddwd (whose int16 pair sums saturate: weights get 7 bits there), ARM's sdot (ARMv8.2
  dot product) or NEON's smull + saddlp (ARMv8.0). x86 kernels take unsigned activations, ARM ones signed.
- Each depthwise convolution whose float32 input is large (``DEPTHWISE_UINT8_MIN_BYTES``) reads that input as
  uint8, quantized the same way (the quantization fuses into the previous kernel's tail, so no float32 copy of
  the big tensor is ever stored), in the direct depthwise kernel reading bytes (``direct.depthwise_direct``:
  ``sum((x - zero) * w * scale_x)`` in float32, the padding contributing nothing); its output is float32 as
  before. Why: memory per model instance (the edge process runs one instance per stream), where the early,
  high-resolution layers' float32 inputs are the largest buffers of the VM's memory plan. The smaller depthwise
  inputs stay float32 (direct kernels too, with ``--conv-kernels direct``): their buffers are small.
- Activation ranges come from running the float32 graph in ONNX Runtime on calibration images (min/max per
  convolution input, full and depthwise); each range is found again in the Relax graph by its convolution's
  weights (a digest of their values), so the two graphs need not name anything alike.

Two fixes make tensorizing work with this TVM build: LLVM 21+ declares ``llvm.x86.avx512.vpdpbusd.512`` on byte
vectors (TVM's intrinsic passes int32 vectors, which fails LLVM's verifier), and MetaSchedule vectorizes a loop
around the tensorized block, which TVM's vectorizer rejects; such kernels are built with their vectorize
annotations as serial loops (LLVM vectorizes the simple ones itself, and the intrinsic is already a vector
instruction).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecv.compile.rewrite import const

PACK_C = 4  # input channels per dot product: every kernel below sums four neighbouring bytes
INT8_BLOCK = "edgecv.int8_block"  # on a direct int8 kernel's sums: dot products (of ``lanes`` sums) per tile
# a depthwise convolution whose float32 input is at least this big reads it as uint8 (``depthwise_uint8``)
DEPTHWISE_UINT8_MIN_BYTES = 2 << 20


@dataclass(frozen=True)
class Int8Kernel:
    """How one CPU family runs the int8 convolutions: the dot-product instruction MetaSchedule tensorizes them
    with (a registered ``TensorIntrin``), the operands it takes, and the limits it puts on them. Adding a CPU
    family is adding one entry to ``INT8_KERNELS``."""

    name: str               # what the manifest (``int8_kernel``) and the records call it
    arch: str               # x86_64 | aarch64
    intrin: str             # the TensorIntrin: ``lanes`` int32 sums of four products each
    instruction: str        # part of the LLVM intrinsic's name: how a kernel built with it is recognised
    lanes: int              # output channels per call: weights packed [K/lanes, R, S, C/4, lanes, 4]
    activations: str        # "uint8" (x86: unsigned bytes x signed weights) | "int8" (ARM: signed x signed)
    weight_max: int         # largest |weight| after rounding (per output channel, symmetric)
    records: str            # the records folder its tuned schedules live in (models/records/<model>/...)
    preset: str             # the target preset those records are tuned with
    needs: tuple[str, ...]  # CPU features (Linux names) it runs on
    rules: str              # MetaSchedule's rule set it goes with: "x86" | "arm"
    transfers: str | None = None  # another kernel whose records it applies until it has its own: the same
                                  # operands and packing, so the same schedules, with this one's dot product

    @property
    def zero_offset(self) -> int:
        """What the activations' zero point shifts by: bytes are 0..255 (uint8) or -128..127 (int8)."""
        return -128 if self.activations == "int8" else 0


# Best first within an architecture: ``int8_kernel`` gives the host preset the first one the CPU runs.
INT8_KERNELS: dict[str, Int8Kernel] = {k.name: k for k in (
    # vpdpbusd: u8 x s8 products summed into int32 in one instruction, exact
    Int8Kernel("avx512-vnni", "x86_64", "dot_16x4_vnni", "vpdpbusd", 16, "uint8", 127, "cascadelake-int8",
               "cascadelake", ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"), "x86"),
    # vpmaddubsw + vpmaddwd: pairs of u8 x s8 products are summed into int16 first, with saturation; 255 x 64 x 2
    # = 32640 fits, 255 x 127 x 2 would not: the weights get 7 bits (as ONNX Runtime's reduce_range on AVX2)
    # the same on 256-bit registers, VEX-encoded (AVX-VNNI: Intel Gracemont/Alder Lake and later, AMD Zen 5), exact;
    # its schedules are the AVX2 kernel's, so it applies AVX2's records until tuned (``transfer_records``)
    Int8Kernel("avx-vnni", "x86_64", "dot_16x4_avxvnni", "vpdpbusd.256", 16, "uint8", 127, "x86-64-v3-vnni-int8",
               "x86-64-v3-vnni", ("avx2", "fma", "avx_vnni"), "x86", transfers="avx2"),
    Int8Kernel("avx512bw", "x86_64", "dot_16x4_avx512", "pmaddubs.w.512", 16, "uint8", 64, "skylake-avx512-int8",
               "skylake-avx512", ("avx512f", "avx512bw"), "x86"),
    Int8Kernel("avx2", "x86_64", "dot_16x4_avx2", "pmadd.ub.sw", 16, "uint8", 64, "x86-64-v3-int8", "x86-64-v3",
               ("avx2", "fma"), "x86"),
    # sdot: s8 x s8 products summed into int32 in one instruction (ARMv8.2 dot product), exact
    Int8Kernel("neon-dotprod", "aarch64", "dot_4x4_i8i8s32_sdot", "neon.sdot", 4, "int8", 127,
               "cortex-a76-int8", "cortex-a76", ("asimd", "asimddp"), "arm"),
    # smull + saddlp: s8 x s8 into int16 (exact: 128 x 128 fits), pairs widened into int32 (ARMv8.0 NEON)
    Int8Kernel("neon", "aarch64", "dot_4x4_i8i8s32_neon", "neon.smull", 4, "int8", 127, "aarch64-int8", "aarch64",
               ("asimd",), "arm"),
)}


def int8_kernel(preset, host_flags: frozenset[str]) -> Int8Kernel:
    """The int8 kernel ``--int8`` uses for a target preset: the preset's own, or for ``x86_64`` (this machine) the
    best one its CPU runs; a one-line error for a target with no int8 path."""
    from edgecv.edge.errors import TargetError

    with_int8 = ", ".join(sorted({k.preset for k in INT8_KERNELS.values()}))
    if preset.name == "x86_64":
        for kernel in INT8_KERNELS.values():
            if kernel.arch == "x86_64" and set(kernel.needs) <= host_flags:
                return kernel
        raise TargetError("--int8 needs at least AVX2 and FMA, which this CPU lacks",
                          f"compile without --int8, or for another box: --target one of {with_int8}")
    if preset.int8 is None:
        raise TargetError(f"--int8 has no kernel for target {preset.name} ({preset.arch})",
                          f"compile without --int8, or use a target with one: {with_int8}")
    return INT8_KERNELS[preset.int8]


def host_kernels(host_flags: frozenset[str], arch: str = "x86_64") -> list[Int8Kernel]:
    """Every int8 kernel this CPU can run (for tests that check each one where it runs)."""
    return [k for k in INT8_KERNELS.values() if k.arch == arch and set(k.needs) <= host_flags]


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


# ---- the int8 convolution ----

def pack_weights(w_ohwi: np.ndarray, lanes: int = 16, weight_max: int = 127, block: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OHWI float32 -> (packed int8 [K/lanes, R, S, C/4, lanes, 4], per-channel scales (Kp,), sum of int8 weights
    (Kp,)), each output channel rounded onto -weight_max..weight_max, output channels padded to a multiple of
    ``block`` (a direct kernel's tile: a multiple of ``lanes``; by default ``lanes``) with zeros."""
    k, r, s, c = w_ohwi.shape
    flat = np.abs(w_ohwi.reshape(k, -1)).max(axis=1)
    scale = np.where(flat > 0, flat / weight_max, 1.0).astype(np.float32)
    q = np.clip(np.round(w_ohwi / scale[:, None, None, None]), -weight_max, weight_max).astype(np.int8)
    block = block or lanes
    if block % lanes:
        raise ValueError(f"a block of {block} output channels is no multiple of the kernel's {lanes} lanes")
    kp = -(-k // block) * block
    padded = np.zeros((kp, r, s, c), np.int8)
    padded[:k] = q
    packed = padded.reshape(kp // lanes, lanes, r, s, c // PACK_C, PACK_C).transpose(0, 2, 3, 4, 1, 5)
    scales = np.zeros(kp, np.float32)
    scales[:k] = scale
    return np.ascontiguousarray(packed), scales, padded.reshape(kp, -1).sum(axis=1, dtype=np.int32)


def _padded_with_zero_point(x, zero, padding, kernel, strides):
    """TE: uint8 (or int8) NHWC ``x`` padded with ``zero[0]`` (the zero point, so the correction of the sum stays exact at the
    borders), and the output's (height, width) for a ``kernel`` (R, S) window moving by ``strides``."""
    from tvm import te, tirx

    n, h, wd, c = (int(v) for v in x.shape)
    top, left, bottom, right = padding
    (r, s), (sh, sw) = kernel, strides
    padded = te.compute((n, h + top + bottom, wd + left + right, c), lambda b, i, j, ch: tirx.if_then_else(
        tirx.all(i >= top, i < h + top, j >= left, j < wd + left), x[b, i - top, j - left, ch], zero[0]),
        name="pad_zero_point")
    return padded, ((h + top + bottom - r) // sh + 1, (wd + left + right - s) // sw + 1)


def conv2d_int8_nhwc(x, w, zero, strides, padding, tile: tuple[int, int] | None = None,
                     out_channels: int | None = None):
    """TE: uint8 (x86) or int8 (ARM) NHWC input, padded with ``zero[0]`` (the zero point), x packed int8 weights
    ``[K/lanes, R, S, C/4, lanes, 4]`` -> int32 NHWC: the shape every kernel's dot product tensorizes.

    With ``tile`` ((block, run): a direct kernel) the sums are computed as ``direct.conv2d_direct`` computes
    them, in tiles ``[N, OH, ceil(OW/run), run, K]`` (the last tile's columns clamped to the row's last pixel),
    marked with the dot products per block (``INT8_BLOCK``), then untiled to ``out_channels``."""
    from tvm import te, tirx

    from edgecv.compile.direct import untile

    n, c = int(x.shape[0]), int(x.shape[3])
    blocks, r, s, _, lanes, _ = (int(v) for v in w.shape)
    padded, (oh, ow) = _padded_with_zero_point(x, zero, padding, (r, s), strides)
    sh, sw = strides
    rr, rs, rc = te.reduce_axis((0, r), "rr"), te.reduce_axis((0, s), "rs"), te.reduce_axis((0, c), "rc")

    def dot(b, i, j, k):
        return te.sum(padded[b, i * sh + rr, j * sw + rs, rc].astype("int32")
                      * w[k // lanes, rr, rs, rc // PACK_C, k % lanes, rc % PACK_C].astype("int32"), axis=[rr, rs, rc])

    if tile is None:
        return te.compute((n, oh, ow, blocks * lanes), dot, name="conv2d_int8")
    block, run = tile
    acc = te.compute((n, oh, -(-ow // run), run, blocks * lanes),
                     lambda b, i, t, u, k: dot(b, i, tirx.min(t * run + u, ow - 1), k), name="conv2d_int8",
                     attrs={INT8_BLOCK: block // lanes})
    return untile(acc, (n, oh, ow, out_channels or blocks * lanes))


@dataclass(frozen=True)
class Int8Plan:
    """What ``--int8`` does to a model: the calibrated input ranges of its convolutions, and the kernel for its CPU."""

    ranges: dict[str, Range]
    kernel: Int8Kernel


def quantize_module(mod, plan: Int8Plan, tiles, log=lambda m: None, direct: bool = False):
    """The channels-last module (``rewrite.channels_last``: weights constant) with its full convolutions in int8
    (direct kernels with ``direct``) and its depthwise ones with large inputs reading uint8 (direct kernels); their
    tiles from ``tiles``, a ``direct.DirectKernels``."""
    from edgecv.compile.rewrite import rewrite_convolutions

    def rewrite(bb, conv):
        if conv.dtype != "float32" or conv.weights.dtype != np.float32:
            return None
        w_oihw = conv.weights.transpose(0, 3, 1, 2)
        full = quantizable(w_oihw.shape, conv.groups)
        if not (full or (depthwise(w_oihw.shape, conv.groups) and depthwise_uint8(conv.shape, conv.dtype))):
            return None
        rng = plan.ranges.get(weight_digest(w_oihw))
        if rng is None:
            return None
        if full:
            int8_tiles = tiles.int8(plan.kernel.lanes) if direct else None
            return _int8_convolution(bb, conv, rng, plan.kernel, int8_tiles), "int8"
        return _uint8_depthwise(bb, conv, rng, tiles), "uint8 depthwise"

    mod, counts = rewrite_convolutions(mod, rewrite)
    log(f"int8 ({plan.kernel.name}): {counts['int8']} convolutions quantized, {counts['uint8 depthwise']} depthwise "
        f"ones reading uint8 inputs, {counts['kept']} kept in float32")
    return mod


def register_int8_intrinsics() -> None:
    """The x86 dot products the kernels tensorize with, beside TVM's own: ``dot_16x4_vnni`` with the operand types
    LLVM 21+ declares for vpdpbusd (64 x i8, not 16 x i32); ``dot_16x4_avx2`` (TVM has none for AVX2): each half
    of the sixteen sums is a vpmaddubsw (u8 x s8 pairs into int16) and a vpmaddwd with ones (int16 pairs into
    int32) on 256-bit registers; ``dot_16x4_avxvnni`` (AVX-VNNI): each half one 256-bit vpdpbusd. Call after
    ``tvm.s_tir.tensor_intrin.x86`` is imported, in every process that schedules or builds. (The ARM ones,
    ``dot_4x4_i8i8s32_sdot`` and ``_neon``, are TVM's as they are.)"""
    import tvm
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin import x86
    from tvm.script import tirx as T

    def llvm(name, *args, dtype):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)

    def two_halves(step):
        """The sixteen sums as two 256-bit halves of eight: ``step(sums, a's 4 bytes x 8, 8 rows of b's 4 bytes)``."""
        @T.prim_func(s_tir=True)
        def impl(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                 c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
            with T.sblock("root"):
                T.reads(c[0:16], a[0:4], b[0:16, 0:4])
                T.writes(c[0:16])
                a_bytes = T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), 8),
                                        dtype="uint8x32")
                c[T.ramp(T.int32(0), 1, 8)] = step(c.vload([0], dtype="int32x8"), a_bytes,
                                                   b.vload([0, 0], dtype="int8x32"))
                c[T.ramp(T.int32(8), 1, 8)] = step(c.vload([8], dtype="int32x8"), a_bytes,
                                                   b.vload([8, 0], dtype="int8x32"))
        return impl

    def pair_sums(sums, a_bytes, b_bytes):  # u8 x s8 pairs into int16 (vpmaddubsw), int16 pairs into int32 (vpmaddwd)
        return sums + llvm("llvm.x86.avx2.pmadd.wd", llvm("llvm.x86.avx2.pmadd.ub.sw", a_bytes, b_bytes,
                                                          dtype="int16x16"), T.broadcast(T.int16(1), 16), dtype="int32x8")

    def dot_256(sums, a_bytes, b_bytes):  # vpdpbusd on ymm: four u8 x s8 products into each int32, exact
        return llvm("llvm.x86.avx512.vpdpbusd.256", sums, a_bytes, b_bytes, dtype="int32x8")

    TensorIntrin.register(INT8_KERNELS["avx2"].intrin, x86.dot_product_16x4_u8i8i32_desc, two_halves(pair_sums),
                          override=True)
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
            c[T.ramp(T.int32(0), 1, 16)] = llvm("llvm.x86.avx512.vpdpbusd.512", c.vload([0], dtype="int32x16"),
                                                a_bytes, b.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(INT8_KERNELS["avx512-vnni"].intrin, x86.dot_product_16x4_u8i8i32_desc, vnni_bytes,
                          override=True)
    TensorIntrin.register(INT8_KERNELS["avx-vnni"].intrin, x86.dot_product_16x4_u8i8i32_desc, two_halves(dot_256),
                          override=True)


def transfer_records(records: Path, kernel: Int8Kernel, into: Path) -> Path:
    """``records`` tuned for the kernel ``kernel.transfers`` names, as ``kernel`` applies them: copied into ``into``
    with that kernel's dot product renamed to ``kernel``'s in every trace (the two take the same operands in the
    same packing, so each schedule is valid for both; only the instructions inside the dot product differ)."""
    import shutil

    from edgecv.compile.pipeline import RECORDS_DB

    theirs = INT8_KERNELS[kernel.transfers].intrin
    into.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(records) / RECORDS_DB[0], into / RECORDS_DB[0])
    traces = (Path(records) / RECORDS_DB[1]).read_text()
    (into / RECORDS_DB[1]).write_text(traces.replace(f'"{theirs}"', f'"{kernel.intrin}"'))
    return into


def int8_space(kernel: Int8Kernel):
    """MetaSchedule's search space for an int8 model on ``kernel``'s CPU: TVM's default CPU rules for that family
    with the kernel's dot product as the tensorizing rule. (TVM picks its rules from the target's features and
    has none that tensorize for AVX2, and would take the 512-bit VNNI rule for an AVX-VNNI CPU.)"""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule import postproc as P
    from tvm.s_tir.meta_schedule import schedule_rule as R

    jobs, innermost, vector, unroll = (16, 64, 64, [0, 16, 64, 512]) if kernel.rules == "x86" else \
        (8, 32, 32, [0, 8, 32, 256])
    reuse = R.ReuseType(req="may", levels=[1, 2], scope="global")
    tiling = dict(structure="SSRSRS", tile_binds=None, max_innermost_factor=innermost, vector_load_lens=None,
                  reuse_read=None, reuse_write=reuse)
    rules = [R.ApplyCustomRule(), R.InlineConstantScalars(),
             R.AutoInline(into_producer=False, into_consumer=True, inline_const_tensor=True, disallow_if_then_else=True,
                          require_injective=True, require_ordered=True, disallow_op=["tirx.exp"]),
             R.AddRFactor(max_jobs_per_core=jobs, max_innermost_factor=innermost),
             R.MultiLevelTilingWithIntrin(kernel.intrin, **tiling),
             R.MultiLevelTiling(**tiling),
             R.ParallelizeVectorizeUnroll(max_jobs_per_core=jobs, max_vectorize_extent=vector,
                                          unroll_max_steps=unroll, unroll_explicit=True),
             R.RandomComputeLocation()]
    postprocs = [P.DisallowDynamicLoop(), P.RewriteParallelVectorizeUnroll(), P.RewriteReductionBlock(),
                 P.RewriteTensorize(vectorize_init_loop=True), P.RewriteLayout()]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs,
                                             mutator_probs=ms.Mutator.create("llvm"))


def serial_tensorized(mod):
    """``mod`` with the vectorize annotations of its tensorized int8 kernels made serial loops (see above)."""
    import tvm

    instructions = tuple(k.instruction for k in INT8_KERNELS.values())
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc) and any(i in func.script() for i in instructions):
            one = tvm.tirx.transform.VectorizeLoop(False)(tvm.IRModule({gv: func}))
            mod[gv] = one[gv]
    return mod


def _quantize(x, scale_x: float, zero: int, dtype: str = "uint8"):
    """x (float32) -> bytes, ``clip(round(x / scale) + zero, 0, 255)`` (uint8; int8: the same shifted by -128 with
    ``zero`` given shifted): element-wise, so the kernel producing x absorbs it and x itself is never stored. The
    scalars are 1-element tensors: parameters like the weights, so a kernel (and its tuning record) is the same
    whatever the calibration found."""
    from tvm import relax

    low, high = (-128, 127) if dtype == "int8" else (0, 255)
    q = relax.op.add(relax.op.round(relax.op.multiply(x, const(np.array([1.0 / scale_x], np.float32)))),
                     const(np.array([zero], np.float32)))
    return relax.op.astype(relax.op.clip(q, low, high), dtype)


def _uint8_depthwise(bb, conv, rng: Range, tiles):
    """quantize x -> depthwise convolution of the bytes with float32 weights -> float32, emitted with ``bb``: the
    direct depthwise kernel (``direct.depthwise_direct``, tiles from ``tiles``) reading bytes, ``sum((x - zero) * w *
    scale_x)``, the padding contributing nothing.

    Float32 arithmetic, not int32 with int8 weights: VNNI's dot product sums four neighbouring bytes of one
    output, while a depthwise window's nine taps are a channel apart in NHWC, so integer arithmetic would be
    widening multiplies, no faster than a byte-to-float conversion and an FMA on a kernel bound by memory; and
    float32 weights (times the input's scale) add no rounding of their own, where int8 ones would (a few tenths of
    a percent of each filter, per channel). Only the input is rounded, as for full convolutions."""
    from edgecv.compile.direct import DEPTHWISE, depthwise_direct, pack_depthwise_weights

    scale_x, zero = rng.affine()
    block, run = tiles.depthwise_tile(conv.shape[3], conv.out_size()[1])
    q = bb.emit(_quantize(conv.x, scale_x, zero))
    return bb.call_te(depthwise_direct, q, const(pack_depthwise_weights(conv.weights * np.float32(scale_x), block)),
                      strides=conv.strides, padding=conv.padding, run=run, offset=float(zero),
                      primfunc_name_hint=DEPTHWISE)


def _int8_convolution(bb, conv, rng: Range, kernel: Int8Kernel, tiles=None):
    """quantize x -> int8 convolution -> float32, emitted with ``bb``; the same value as the float convolution.
    With ``tiles`` (``DirectKernels.int8``: the tiles of this kernel's dot products) a direct kernel."""
    from tvm import relax

    scale_x, zero = rng.affine()
    zero += kernel.zero_offset
    k = conv.weights.shape[0]
    tile = tiles.conv_tile(k, conv.out_size()[1]) if tiles is not None else None
    packed, scale_w, wsum = pack_weights(conv.weights, kernel.lanes, kernel.weight_max, tile and tile[0])
    if tile is not None:  # the untile drops the padded channels
        scale_w, wsum = scale_w[:k], wsum[:k]
    q = bb.emit(_quantize(conv.x, scale_x, zero, kernel.activations))
    acc = bb.emit(bb.call_te(conv2d_int8_nhwc, q, const(packed), const(np.array([zero], kernel.activations)),
                             strides=conv.strides, padding=conv.padding, tile=tile, out_channels=k,
                             primfunc_name_hint="conv2d_int8"))
    y = relax.op.multiply(relax.op.astype(relax.op.subtract(acc, const((zero * wsum).astype(np.int32))), "float32"),
                          const((scale_x * scale_w).astype(np.float32)))
    if tile is None and k != packed.shape[0] * kernel.lanes:
        y = relax.op.strided_slice(bb.emit(y), axes=[3], begin=[0], end=[k])
    return y
