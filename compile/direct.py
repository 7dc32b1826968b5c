"""Float32 convolutions as register-tiled direct kernels, scheduled by hand instead of searched.

Why: on AVX2 MetaSchedule's searched schedules reach a third to a half of what hand-written kernels (ONNX
Runtime's MLAS, oneDNN) do on the same convolutions, and more trials buy a few per cent (docs/tuning.md). The
kernels those libraries run have one shape: a block of output channels (a few vector registers wide) times a
short run of output pixels held in registers as accumulators, while the reduction (window, then input channels)
streams weights as vectors and inputs as broadcast scalars. Written in TE with the layouts it needs and scheduled
the same way every time, TVM's LLVM backend emits that inner loop as vbroadcastss + vfmadd231ps (AVX2), the same on
AVX-512 and NEON with their widths.

What changes (``DirectKernels``: the tile shapes for a target's vector width and register count):

- The graph runs channels-last (NHWC), as for int8 (``rewrite.channels_last``); a convolution on the model's NCHW
  input reads it as NHWC itself (``conv2d_direct(channels_first=True)``), so no transpose runs before it.
- Each float32 convolution with constant weights becomes one of two kernels, weights pre-packed in blocks of
  ``block`` channels (a few vector registers) contiguous for each input channel and tap:
  - full (groups 1): ``[K'/block, R, S, C, block]``, output channels padded to a multiple of ``block``;
  - depthwise (one filter per channel): ``[C/block, R, S, block]``; no padded copy of the input (clamped loads).
  Both compute a tiled output ``[N, OH, ceil(OW/run), run, K']``: each tile of ``run`` neighbouring output pixels
  is computed whole, the last one reading the row's last pixel again where it runs past the edge (its input
  column clamped), so no tile has a condition inside; ``direct_untile`` copies the tiles out, dropping what ran
  past the edge and the padded channels, with the bias and activation that fuse after it.
- ``direct_schedule``: rows and blocks of channels in parallel (a depthwise kernel, or a full one with a few KB of
  weights: rows in parallel, each row streamed tile by tile across every block of channels, in address order);
  per tile, its accumulators (``run`` x ``block``, marked on the kernel as ``BLOCK``) in registers (a local buffer,
  unrolled, one vector register per vector), the reduction around them, and the untile with its element-wise tail
  folded into the store of each tile. A full convolution's padding is done once, in parallel, before.
- int8 convolutions (``--int8``) get kernels of the same shape around the CPU's dot product: tiles from
  ``DirectKernels.int8``, the TE ``quantize.conv2d_int8_nhwc``, the schedule ``leftovers.int8_schedule``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONV = "direct_conv2d"            # block names: how ``direct_schedule`` finds its kernels
DEPTHWISE = "direct_depthwise"
UNTILE = "direct_untile"
BLOCK = "edgecv.direct_block"       # on a kernel's accumulators: output channels per block of its packed weights
ROWS_FIRST_WEIGHT_BYTES = 128 << 10  # a convolution with at most this much weight runs rows outermost
GROUP_INPUT_BYTES = 256 << 10       # else rows go in groups whose input rows fit in this much cache
PANEL_BYTES = 32 << 10              # one block's weights up to this size serve a tile whole, else in chunks
STREAM_WEIGHT_BYTES = 16 << 10      # a convolution with at most this much weight streams its rows as a depthwise one


@dataclass(frozen=True)
class DirectKernels:
    """How a CPU's vector unit shapes the tiles: ``lanes`` float32 per vector register, ``registers`` of them.

    A tile of a full convolution is ``vectors`` registers of output channels by ``run`` output pixels, all
    accumulators. Per step of the reduction it loads ``vectors`` weight registers and broadcasts ``run`` inputs for
    ``vectors * run`` FMAs, ``1/run + 1/vectors`` loads per FMA; measured on AVX2, a tile loading more than
    ``loads_per_fma`` per FMA runs slower, by about the square root of the excess (4 x 3: full speed; 2 x 4: 0.93;
    1 x 12: 0.75);
    whichever of the two is reused across the other's loop stays live in registers beside the accumulators
    (``direct_schedule`` puts the larger count outside, so the smaller one stays live), plus one register for the
    operand just loaded. Two FMAs issue per cycle with a latency of about four, so at least ``min_accumulators``
    independent ones keep the units busy."""

    lanes: int
    registers: int
    min_accumulators: int = 8
    loads_per_fma: float = 0.6    # loads (vectors, broadcasts) per FMA a tile can take without waiting on them

    def tiles(self) -> list[tuple[int, int]]:
        """Every (vectors, run) whose accumulators and live operands fit in the registers."""
        return [(v, r) for v in range(1, self.registers) for r in range(1, self.registers)
                if v * r + min(v, r) + 1 <= self.registers]

    def conv_tile(self, out_channels: int, out_width: int) -> tuple[int, int]:
        """(block, run) for a full convolution: ``block`` output channels (a multiple of ``lanes``) by ``run``
        output pixels, by the model above: FMAs against the loads that feed them, enough
        accumulators in flight, and the work wasted on padded channels and on pixels past the row's edge."""
        def score(tile):
            v, r = tile
            run = min(r, out_width)
            useful = out_channels * out_width / (_round_up(out_channels, v * self.lanes) * _round_up(out_width, run))
            issue = min(1.0, self.loads_per_fma / (1 / v + 1 / run)) ** 0.5
            latency = min(1.0, v * run / self.min_accumulators)
            return round(useful * issue * latency, 3), v * run, -abs(v - run)

        v, r = max(self.tiles(), key=score)
        return v * self.lanes, min(r, out_width)

    def int8(self, sums: int) -> "DirectKernels":
        """The tiles of an int8 kernel (``quantize.conv2d_int8_nhwc``) on this CPU: its dot product of ``sums`` int32
        sums takes the place of a vector FMA, holding ``sums / lanes`` registers of sums and as many of weights, and
        two registers are kept aside for its temporaries (AVX2's int16 products and ones). Measured on AVX2, 16
        sums by 5 pixels (10 registers of sums) ran fastest, 16 by 6 and 32 by 2 or 4 slower; on AVX-512 VNNI this
        model's tiles beat every fixed one tried (6 x 48, 4 x 64, 12 x 16)."""
        per_vector = max(1, sums // self.lanes)
        return DirectKernels(lanes=sums, registers=(self.registers - 2) // per_vector,
                             min_accumulators=self.min_accumulators, loads_per_fma=self.loads_per_fma)

    def depthwise_tile(self, channels: int, out_width: int) -> tuple[int, int]:
        """(block, run) for a depthwise convolution: one vector of channels by four pixels. Each tap loads its own
        inputs, so there is little to reuse but the weights and the kernel is bound by memory (``direct_schedule``
        streams its rows in address order); measured on AVX2, runs of three to six pixels and blocks of one or two
        vectors ran within a few per cent of each other, two pixels a tenth slower."""
        return (self.lanes if channels % self.lanes == 0 else channels), min(4, out_width)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def kernels_for(tvm_target) -> DirectKernels:
    """The tile shapes for a TVM target, from its features: AVX-512 has thirty-two registers of sixteen floats, AVX2
    sixteen of eight, aarch64's NEON thirty-two of four, ARMv7's NEON sixteen of four (its q registers), SSE2 (any
    x86-64) sixteen of four."""
    import tvm.target.codegen

    has = lambda feature: tvm.target.codegen.target_has_features(feature, tvm_target)  # noqa: E731
    if has("avx512f"):
        return DirectKernels(lanes=16, registers=32)
    if has("avx2"):
        return DirectKernels(lanes=8, registers=16)
    if str(tvm_target.attrs.get("mtriple", "")).startswith("aarch64"):
        return DirectKernels(lanes=4, registers=32)
    return DirectKernels(lanes=4, registers=16)


# ---- TE: the two kernels ----

def _padded(at, shape, dtype, padding, name="direct_pad"):
    """The input ``at(b, i, j, c)`` (NHWC ``shape``) padded with zeros, read the same way; a tensor computed once
    where there is padding."""
    from tvm import te, tirx

    top, left, bottom, right = padding
    if not any(padding):
        return at
    n, h, w, c = shape
    padded = te.compute((n, h + top + bottom, w + left + right, c), lambda b, i, j, ch: tirx.if_then_else(
        tirx.all(i >= top, i < h + top, j >= left, j < w + left), at(b, i - top, j - left, ch),
        tirx.const(0.0, dtype)), name=name)
    return lambda b, i, j, ch: padded[b, i, j, ch]


def _out_size(size: int, before: int, after: int, kernel: int, stride: int) -> int:
    return (size + before + after - kernel) // stride + 1


def untile(acc, out_shape):
    """The tiled output ``[N, OH, tiles, run, K']`` as ``[N, OH, OW, K]``: past-the-edge pixels and padded
    channels dropped."""
    from tvm import te

    run = int(acc.shape[3])
    return te.compute(out_shape, lambda b, i, j, k: acc[b, i, j // run, j % run, k], name=UNTILE)


def conv2d_direct(x, w, strides, padding, run: int, out_channels: int, channels_first: bool = False):
    """TE: float32 NHWC ``x`` x weights packed ``[K'/block, R, S, C, block]`` -> NHWC ``[N, OH, OW, out_channels]``.
    ``channels_first``: ``x`` is NCHW (a model's input), read as NHWC where it is padded or used: no transpose
    before."""
    from tvm import te, tirx

    if channels_first:
        n, c, h, wd = (int(v) for v in x.shape)
        at = lambda b, i, j, ch: x[b, ch, i, j]  # noqa: E731
    else:
        n, h, wd, c = (int(v) for v in x.shape)
        at = lambda b, i, j, ch: x[b, i, j, ch]  # noqa: E731
    blocks, r, s, _, block = (int(v) for v in w.shape)
    (sh, sw), (top, left, bottom, right) = strides, padding
    oh, ow = _out_size(h, top, bottom, r, sh), _out_size(wd, left, right, s, sw)
    xp = _padded(at, (n, h, wd, c), x.dtype, padding)
    rr, rs, rc = te.reduce_axis((0, r), "rr"), te.reduce_axis((0, s), "rs"), te.reduce_axis((0, c), "rc")
    acc = te.compute((n, oh, -(-ow // run), run, blocks * block), lambda b, i, t, u, k: te.sum(
        xp(b, i * sh + rr, tirx.min(t * run + u, ow - 1) * sw + rs, rc) * w[k // block, rr, rs, rc, k % block],
        axis=[rr, rs, rc]), name=CONV, attrs={BLOCK: block})
    return untile(acc, (n, oh, ow, out_channels))


def depthwise_direct(x, w, strides, padding, run: int, offset: float = 0.0):
    """TE: NHWC ``x`` (float32, or bytes read as float32, minus ``offset``: int8's zero point) x weights packed
    ``[C/block, R, S, block]`` (one filter per channel) -> float32 NHWC, padded with zeros.

    No padded copy of the input: each tap reads its input at a clamped position, always a valid address, and its
    weight is taken as zero where the position is in the padding. Branch-free, so the taps unroll around registers;
    a padded copy would cost a kernel this memory-bound as much as the convolution itself. (The zero goes on the
    weight, not the input: TVM simplifies each side of a select knowing its condition, and would drop the clamp
    of a load under one, reading outside the input.)"""
    from tvm import te, tirx

    n, h, wd, c = (int(v) for v in x.shape)
    _, r, s, block = (int(v) for v in w.shape)
    (sh, sw), (top, left, bottom, right) = strides, padding
    oh, ow = _out_size(h, top, bottom, r, sh), _out_size(wd, left, right, s, sw)
    rr, rs = te.reduce_axis((0, r), "rr"), te.reduce_axis((0, s), "rs")

    def tap(b, i, t, u, ch, rr, rs):
        # the column clamped, not the pixel: neighbouring pixels' taps at the same column are then the same load
        row, col = i * sh + rr - top, (t * run + u) * sw + rs - left
        value = x[b, tirx.max(tirx.min(row, h - 1), 0), tirx.max(tirx.min(col, wd - 1), 0), ch].astype("float32")
        inside = tirx.all(row >= 0, row < h, col >= 0, col < wd)
        weight = tirx.Select(inside, w[ch // block, rr, rs, ch % block], tirx.const(0.0, "float32"))
        return (value - tirx.const(offset, "float32") if offset else value) * weight

    acc = te.compute((n, oh, -(-ow // run), run, c), lambda b, i, t, u, ch: te.sum(tap(b, i, t, u, ch, rr, rs),
                                                                                  axis=[rr, rs]), name=DEPTHWISE,
                     attrs={BLOCK: block})
    return untile(acc, (n, oh, ow, c))


def pack_conv_weights(w_ohwi: np.ndarray, block: int) -> np.ndarray:
    """OHWI float32 -> ``[K'/block, R, S, C, block]``, output channels padded with zeros to a multiple of block."""
    k, r, s, c = w_ohwi.shape
    kp = _round_up(k, block)
    padded = np.zeros((kp, r, s, c), np.float32)
    padded[:k] = w_ohwi
    return np.ascontiguousarray(padded.reshape(kp // block, block, r, s, c).transpose(0, 2, 3, 4, 1))


def pack_depthwise_weights(w_ohwi: np.ndarray, block: int) -> np.ndarray:
    """Depthwise OHWI (I = 1) float32 -> ``[C/block, R, S, block]``."""
    c, r, s, _ = w_ohwi.shape
    return np.ascontiguousarray(w_ohwi[:, :, :, 0].reshape(c // block, block, r, s).transpose(0, 2, 3, 1))


# ---- the schedule ----

def is_direct(func) -> bool:
    """Whether a PrimFunc (as imported and fused, before scheduling) computes a direct convolution."""
    import tvm.s_tir as s_tir

    sch = s_tir.Schedule(func)  # every direct kernel, float32 or int8 (quantize.conv2d_int8_nhwc), ends in its untile
    return any(sch.get(b).name_hint == UNTILE for b in sch.get_child_blocks(sch.get_sblock("root")))


def direct_schedule(func, lanes: int):
    """``func`` (a PrimFunc around one ``conv2d_direct`` or ``depthwise_direct``) scheduled as the module says, or
    None if it isn't one. ``lanes``: float32 per vector register."""
    import tvm.s_tir as s_tir

    from edgecv.compile.leftovers import DIRECT, SCHEDULED, _fold_tail

    sch = s_tir.Schedule(func)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    names = [sch.get(b).name_hint for b in blocks]
    kind = next((name for name in (CONV, DEPTHWISE) if names.count(name) == 1), None)
    if kind is None or UNTILE not in names:
        return None
    at = names.index(kind)
    acc, producers, tail = blocks[at], blocks[:at], _fold_tail(sch, blocks[at + 1:])
    # the block the kernel marks, not a buffer's last dimension: a depthwise kernel's input has four dimensions too
    block = int(sch.get(acc).annotations[BLOCK])
    weights = next((r.source for r in sch.get(acc).reads if len(r.source.shape) == 5), None)  # a full one's
    loops = sch.get_loops(acc)
    b, i, t, u, k, *window = loops
    channel_block, channels = sch.split(k, [None, block])
    if block % lanes == 0:  # one register per vector: LLVM splits wide vector types badly
        vectors, vector = sch.split(channels, [None, lanes])
    else:
        vectors, vector = sch.add_unit_loop(channels), channels
    # the larger of the two counts outside: the operands of the smaller one stay live across it
    inner = [u, vectors] if _extent(sch, u) >= _extent(sch, vectors) else [vectors, u]
    # rows in groups, each group's blocks of channels, its rows (row_group): the group's input stays in cache while
    # every block's weights pass over it, and each block's panel of weights serves the whole group
    rows, row = split_rows(sch, i, row_group(sch, acc, kind, weights), _extent(sch, channel_block))
    # a block's weights for the whole window larger than PANEL_BYTES pass over each row's tiles in chunks of input
    # channels that fit, each tile's sums kept between chunks (in cache, not registers), so every tile of the row
    # finds the chunk's weights in cache instead of streaming them all again
    chunk = _channel_chunk(weights) if kind == CONV else None
    if kind == DEPTHWISE or _bytes(weights) <= STREAM_WEIGHT_BYTES:
        # bound by memory, so each row is streamed once, in address order: a tile's pixels across every block of
        # channels (contiguous in NHWC) before the next tile's; the weights, a few KB, stay in cache. (Blocks of
        # channels outside the tiles read and write each pixel's channels a block at a time, a page apart from the
        # next pixel's: measured on AVX2, a depthwise kernel a quarter to a third slower, and the first full
        # convolutions of a MobileNet, with 2-14 KB of weights, slower when their output is not in cache.)
        sch.reorder(b, rows, row, t, channel_block, *window, *inner, vector)
        outer, tile = sch.fuse(b, rows), channel_block
    elif chunk:
        chunks, within = sch.split(window[-1], [None, chunk])
        window = [*window[:-1], within]
        sch.reorder(b, rows, channel_block, row, chunks, t, *window, *inner, vector)
        outer, tile = sch.fuse(b, rows, channel_block), row
    else:
        sch.reorder(b, rows, channel_block, row, t, *window, *inner, vector)
        outer, tile = sch.fuse(b, rows, channel_block), t
    sch.parallel(outer)
    sch.set_scope(acc, 0, "local")  # one tile's accumulators, in registers (the row's, between chunks)
    for step in tail:
        sch.reverse_compute_at(step, tile)
        last = sch.get_loops(step)[-1]
        if _extent(sch, last) % lanes == 0:
            sch.vectorize(sch.split(last, [None, lanes])[1])
    for loop in inner:
        sch.unroll(loop)
    sch.vectorize(vector)
    sch.decompose_reduction(acc, chunks if chunk else window[0])
    if kind == DEPTHWISE:  # its taps, unrolled: the border checks fold into each tile's code
        for loop in window:
            sch.unroll(loop)
    for producer in producers:  # a full convolution's padding: once, in parallel, before
        first = sch.get_loops(producer)
        sch.parallel(sch.fuse(first[0], first[1]) if len(first) > 1 else first[0])
    return sch.mod["main"].with_attr(SCHEDULED, True).with_attr(DIRECT, True)


def split_rows(sch, rows, group: int, blocks: int, exact: bool = False):
    """The output rows' loop split into groups of ``group`` rows (``row_group``), or, where a kernel runs every row
    per block of channels but has too few ``blocks`` to share out evenly, into parts (``_row_parts``; the last part
    may be short, unless ``exact``: tensorized kernels take no condition on their rows)."""
    parts = _row_parts(blocks, _extent(sch, rows), exact) if group == _extent(sch, rows) else 1
    return sch.split(rows, [parts, None] if parts > 1 else [None, group])


def _row_parts(blocks: int, rows: int, exact: bool = False) -> int:
    """Into how many parts a kernel that runs every row per block of channels splits its rows, so that its parallel
    tasks (blocks x parts) share out evenly over 2 or 4 threads (edge boxes' cores): 3 blocks on 2 threads would
    leave one idle a third of the time; each part reads the block's weights again, so not where there are enough
    blocks (at least 8: a few per cent idle at most). ``exact``: only parts that divide the rows."""
    if blocks >= 8:
        return 1
    fits = [p for p in (1, 2, 4) if p <= rows and (not exact or rows % p == 0)]
    return next((p for p in fits if blocks * p % 4 == 0), next((p for p in fits if blocks * p % 2 == 0), 1))


def _channel_chunk(weights) -> int | None:
    """Input channels per chunk of a full convolution's reduction: the largest divisor of its input channels whose
    weights for one block of output channels (every tap) fit in ``PANEL_BYTES``; None when all of them do."""
    blocks, channels = int(weights.shape[0]), int(weights.shape[3])
    per_channel = _bytes(weights) // (blocks * channels)  # one block's weights for one input channel, every tap
    if per_channel * channels <= PANEL_BYTES:
        return None
    return max(c for c in range(1, channels + 1) if channels % c == 0 and c * per_channel <= PANEL_BYTES) or 1


def row_group(sch, acc, kind: str, weights, blocks: int | None = None) -> int:
    """How many output rows go through every block of channels together. One (each row's output written whole,
    block after block) where all the weights stay in cache anyway, and for depthwise kernels, whose weights are
    tiny. Else either every row (each block's panel of weights serves all rows, the input read again per block) or,
    where that moves less through memory, groups whose input fits ``GROUP_INPUT_BYTES`` (a divisor of the rows, so no
    group has a condition): the weights then pass once per group and each group's input stays in cache for every
    block. (Measured on AVX2: SSD-512's 1x1 512 -> 512 convolutions, 1 MB of weights over 2 MB of input, gain from
    groups; YOLOv3's 3x3 heads, 19 MB of weights over 0.35 MB, lose a fifth.) Sizes in bytes of the buffers' types;
    ``blocks``: how many blocks of channels the weights hold, if not their first dimension (int8's is per dot
    product)."""
    if kind == DEPTHWISE:
        return 1
    rows, weight_bytes = _extent(sch, sch.get_loops(acc)[1]), _bytes(weights)
    if weight_bytes <= ROWS_FIRST_WEIGHT_BYTES:
        return 1
    source = next(r.source for r in sch.get(acc).reads if not r.source.same_as(weights) and len(r.source.shape) == 4)
    height, input_bytes = int(source.shape[1]), _bytes(source)
    if input_bytes <= GROUP_INPUT_BYTES:
        return rows
    row_bytes = input_bytes // height * max(1, height // rows)  # the input rows one output row moves on by
    group = max(g for g in range(1, rows + 1) if rows % g == 0 and g * row_bytes <= max(GROUP_INPUT_BYTES, row_bytes))
    blocks = blocks or int(weights.shape[0])
    by_block = weight_bytes + blocks * input_bytes
    by_group = rows // group * weight_bytes + input_bytes
    return group if by_group < by_block else rows


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def _bytes(buffer) -> int:
    import tvm

    return _elements(buffer.shape) * tvm.DataType(str(buffer.dtype)).bits // 8


def _elements(shape) -> int:
    return int(np.prod([int(d) for d in shape]))


# ---- the Relax rewrite ----

def direct_module(mod, kernels: DirectKernels, log=lambda m: None):
    """The channels-last module (``rewrite.channels_last``: weights constant) with each float32 convolution, full or
    depthwise, as its direct kernel."""
    from edgecv.compile.rewrite import const, rewrite_convolutions

    def rewrite(bb, conv):
        if conv.dtype != "float32" or conv.weights.dtype != np.float32:
            return None
        k = conv.weights.shape[0]
        out_width = conv.out_size()[1]
        if conv.groups == 1:
            block, run = kernels.conv_tile(k, out_width)
            return bb.call_te(conv2d_direct, conv.x if conv.nchw is None else conv.nchw,
                              const(pack_conv_weights(conv.weights, block)), strides=conv.strides,
                              padding=conv.padding, run=run, out_channels=k, channels_first=conv.nchw is not None,
                              primfunc_name_hint=CONV), "full"
        if conv.is_depthwise:
            block, run = kernels.depthwise_tile(k, out_width)
            return bb.call_te(depthwise_direct, conv.x, const(pack_depthwise_weights(conv.weights, block)),
                              strides=conv.strides, padding=conv.padding, run=run,
                              primfunc_name_hint=DEPTHWISE), "depthwise"
        return None

    mod, counts = rewrite_convolutions(mod, rewrite)
    log(f"direct kernels: {counts['full']} convolutions, {counts['depthwise']} depthwise ones"
        + (f", {counts['kept']} others kept" if counts["kept"] else ""))
    return mod
