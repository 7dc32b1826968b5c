"""A basic schedule for the kernels tuning left without a record, so none runs as the importer wrote it.

Left alone, such a kernel is a serial loop nest that materialises every step in full: a depthwise convolution
allocates its padded input, its raw output and its output plus bias as three scratch buffers, which the runtime's
workspace pool then keeps for the life of the process. The basic schedule runs the output channels in parallel,
folds the element-wise tail (bias, activation) into one loop nest computed per channel right after that channel's
reduction, and pads per channel inside the same loop where a channel reads only its own input (depthwise); where
each output channel reads every input channel (a full convolution), that would pad the whole input once per output
channel, so the padding is done once, in parallel, before. No scratch beyond one channel's planes for depthwise
kernels, and every core used. Only kernels of one reduction with element-wise work around it are touched; for
anything else, or anything the schedule primitives refuse, the kernel is left as it was.

Int8 convolutions (``compile --int8``) get ``int8_schedule`` instead: register tiles around the CPU's dot product,
the schedule of the direct int8 kernels (``--conv-kernels direct``), and so a model nobody tuned still runs its
int8 kernels on it.
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEDULED = "tirx.is_scheduled"  # what MetaSchedule's ApplyDatabase marks the kernels it scheduled with
DIRECT = "edgecv.direct"         # marks what direct.direct_schedule scheduled
ELEMENTWISE = "edgecv.elementwise"  # marks what elementwise_schedule scheduled
PARALLEL_MIN_ELEMENTS = 1 << 14  # an element-wise kernel writing fewer runs on one core: waking the others costs more


class _Redundant(Exception):
    """Computing the producer per output channel would compute it many times over (a full convolution)."""


def basic_schedule(func):
    """``func`` (a PrimFunc) scheduled as above, or None if it isn't that shape."""
    for producers_per_channel in (True, False):
        try:
            return _basic_schedule(func, producers_per_channel)
        except _Redundant:
            continue
    return None


def _basic_schedule(func, producers_per_channel: bool):
    import tvm.s_tir as s_tir
    import tvm.tirx as tirx

    sch = s_tir.Schedule(func)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    reductions = [i for i, b in enumerate(blocks)
                  if any(v.iter_type == tirx.IterVar.CommReduce for v in sch.get(b).iter_vars)]
    if len(reductions) != 1 or len(sch.get_loops(blocks[reductions[0]])) < 3:
        return None
    at = reductions[0]
    producers, tail = blocks[:at], _fold_tail(sch, blocks[at + 1:])
    loops = sch.get_loops(blocks[at])
    outer = sch.fuse(loops[0], loops[1])    # batch x output channels
    sch.parallel(outer)
    for step in tail:
        sch.reverse_compute_at(step, outer)
    for producer in reversed(producers):    # padding: per channel where a channel reads only its own (depthwise)
        if producers_per_channel:
            sch.compute_at(producer, outer)
            if _elements(sch, producer, after=outer) * _extent(sch, outer) > 1.5 * _written(sch, producer):
                raise _Redundant
        else:                               # else once, in parallel, before the reduction
            first = sch.get_loops(producer)
            sch.parallel(sch.fuse(first[0], first[1]) if len(first) > 1 else first[0])
    return sch.mod["main"].with_attr(SCHEDULED, True)


def elementwise_schedule(func, lanes: int):
    """``func`` (a PrimFunc of element-wise blocks only, a quantization or a layout change between kernels) as one
    loop nest, or None if it isn't that: every block inlined into the last, its outer loops in parallel (if it
    writes ``PARALLEL_MIN_ELEMENTS`` or more) and its innermost one in vectors of ``lanes`` where it divides. As imported such a kernel is a serial loop nest per
    operator, each writing a full-size scratch buffer: five passes over the tensor for int8's quantization."""
    import tvm.s_tir as s_tir
    import tvm.tirx as tirx

    sch = s_tir.Schedule(func)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    if any(v.iter_type != tirx.IterVar.DataPar for b in blocks for v in sch.get(b).iter_vars):
        return None
    for block in reversed(blocks[:-1]):
        sch.compute_inline(block)  # a ScheduleError (it can't be) leaves the kernel as it was
    loops = sch.get_loops(blocks[-1])
    if len(loops) < 2:
        return None
    outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    if _written(sch, blocks[-1]) >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)
    if _extent(sch, loops[-1]) % lanes == 0:
        sch.vectorize(sch.split(loops[-1], [None, lanes])[1])
    return sch.mod["main"].with_attr(SCHEDULED, True).with_attr(ELEMENTWISE, True)


def int8_schedule(func, intrin: str, pixels: int = 4):
    """``func`` (a PrimFunc around an int8 convolution, ``quantize.conv2d_int8_nhwc``) tensorized with the CPU's dot
    product ``intrin``, as a fixed schedule rather than a searched one, or None if it isn't that shape. Tiles of
    neighbouring output pixels by a block of output channels, each tile's int32 sums in registers (a local buffer,
    unrolled) while the reduction (window, then input channels four at a time) streams the block's weights past
    every pixel of the tile; the element-wise tail computed per tile right after. Rows and blocks go as the float32
    direct kernels' do (``direct.row_group``: row by row, every block of each, where the weights are small; else
    each block's weights over a group of rows or all of them), in parallel.
    A direct kernel (tiled output) brings its tile: ``run`` pixels by the block marked ``INT8_BLOCK``; a plain
    one (``--conv-kernels metaschedule`` without a record: every int8 kernel on an ARM board no one tuned on, as
    no emulator measures ARM time) gets ``pixels`` or fewer, a divisor of its width, by one dot product. The
    padding is done once, in parallel, before."""
    import tvm.s_tir as s_tir
    from tvm.s_tir.schedule.transform import tile_with_tensor_intrin

    from edgecv.compile.direct import row_group, split_rows
    from edgecv.compile.quantize import INT8_BLOCK

    sch = s_tir.Schedule(func)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    names = [sch.get(b).name_hint for b in blocks]
    if names.count("conv2d_int8") != 1:
        return None
    at = names.index("conv2d_int8")
    conv, producers, tail = blocks[at], blocks[:at], _fold_tail(sch, blocks[at + 1:])
    annotations = sch.get(conv).annotations
    direct = INT8_BLOCK in annotations  # a direct kernel's tiled sums carry their block (quantize.conv2d_int8_nhwc)
    per_tile = int(annotations.get(INT8_BLOCK, 1))
    weights = next(r.source for r in sch.get(conv).reads if len(r.source.shape) == 6)
    group = row_group(sch, conv, "int8", weights, int(weights.shape[0]) // per_tile) if direct else 1
    if tile_with_tensor_intrin(sch, conv, intrin) is None:
        return None
    loops = sch.get_loops(conv)
    if direct:
        b, i, tiles, run, k_blocks, rr, rs, rc_blocks, k_lanes, _ = loops
    else:
        b, i, j, k_blocks, rr, rs, rc_blocks, k_lanes, _ = loops
        width = _extent(sch, j)
        tiles, run = sch.split(j, [None, max(f for f in range(1, pixels + 1) if width % f == 0)])
    block, dots = sch.split(k_blocks, [None, per_tile])
    # as the float32 direct kernels (direct.row_group): rows in groups, each group's blocks of channels, its rows
    rows, row = split_rows(sch, i, group, _extent(sch, block), exact=True)
    sch.reorder(b, rows, block, row, tiles, rr, rs, rc_blocks, run, dots, k_lanes)
    sch.parallel(sch.fuse(b, rows, block))
    for step in tail:
        sch.reverse_compute_at(step, tiles)
    init = sch.decompose_reduction(conv, rr)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(run)
    sch.unroll(dots)
    sch.tensorize(k_lanes, intrin)
    sch.set_scope(init, 0, "local")  # the tile's sums (the tensorized block is gone: its init still writes them)
    for producer in producers:
        first = sch.get_loops(producer)
        sch.parallel(sch.fuse(first[0], first[1]) if len(first) > 1 else first[0])
    scheduled = sch.mod["main"].with_attr(SCHEDULED, True).with_attr(TENSORIZED, True)
    return scheduled.with_attr(DIRECT, True) if direct else scheduled


def _fold_tail(sch, tail: list) -> list:
    """The element-wise blocks after a reduction folded into as few as they can be (each into the one before it,
    bias into activation and so on), from the last; the blocks left, in order. A block that writes fewer elements
    than the one before it (a slice dropping padded channels) stays its own block, and the blocks after it fold
    into it. (TVM 0.27 lets such a slice be inlined into its producer, which then writes the slice's buffer over
    the producer's whole extent: out of bounds.) A block whose input is read by another block too (``x`` in a
    leaky ReLU's ``max(x, 0.1 * x)``) is not folded into it either: TVM 0.27 would, and leave the other reader
    reading a buffer no block writes any more. The side branch (``0.1 * x``) is first inlined into the block
    that joins it back (the maximum), so the chain is one again and folds whole."""
    tail = _join_branches(sch, tail)
    left = []
    for before, step in reversed(list(zip(tail, tail[1:]))):
        if _written(sch, step) != _written(sch, before) or len(sch.get_consumers(before)) != 1:
            left.append(step)
            continue
        try:
            sch.reverse_compute_inline(step)
        except (RuntimeError, ValueError):  # ScheduleError: it stays its own block
            left.append(step)
    return tail[:1] + left[::-1]


def _join_branches(sch, tail: list) -> list:
    """``tail`` with each block that feeds only a block reading other tail blocks too inlined into it."""
    kept = list(tail)
    for block in tail[1:-1]:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1 or len(sch.get_producers(consumers[0])) < 2 \
                or _written(sch, consumers[0]) != _written(sch, block):
            continue
        try:
            sch.compute_inline(block)
        except (RuntimeError, ValueError):  # ScheduleError: it stays
            continue
        kept.remove(block)
    return kept


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def _elements(sch, block, after) -> int:
    """Iterations of ``block``'s loops nested inside ``after``."""
    loops = list(sch.get_loops(block))
    inner = loops[[sch.get(l).same_as(sch.get(after)) for l in loops].index(True) + 1:]
    n = 1
    for loop in inner:
        n *= _extent(sch, loop)
    return n


def _written(sch, block) -> int:
    """Elements of the buffer ``block`` writes."""
    region = sch.get(block).writes[0]
    n = 1
    for dim in region.source.shape:  # (TVM 0.27: a TensorRegion's buffer is its ``source``)
        n *= int(dim)
    return n


@dataclass(frozen=True)
class Kernels:
    """What edgecv's own kernels in a module need to be scheduled: the int8 convolutions' dot product (a
    ``TensorIntrin`` name) and the float32 registers' width for the direct ones; None where there are none."""

    int8_intrin: str | None = None
    direct_lanes: int | None = None


def schedule_leftovers(mod, log=lambda message: None, kernels: Kernels = Kernels()):
    """``mod`` with a schedule for each PrimFunc not yet scheduled: ``int8_schedule`` for the int8 convolutions,
    ``direct.direct_schedule`` for the direct ones, ``basic_schedule`` for the rest; logs how many it covered."""
    from tvm import relax

    from edgecv.compile.direct import is_direct

    done, kept, dot, direct, direct_int8, flat, missed = [], [], [], [], [], [], []
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function) or (func.attrs is not None and SCHEDULED in func.attrs
                                                and func.attrs[SCHEDULED]):
            continue
        scheduled = _first_that_fits(func, kernels)
        if scheduled is None:
            kept.append(gv.name_hint)
            continue
        if DIRECT not in scheduled.attrs and is_direct(func):
            missed.append(gv.name_hint)
        mod[gv] = scheduled
        (direct if DIRECT in scheduled.attrs else dot if TENSORIZED in scheduled.attrs
         else flat if ELEMENTWISE in scheduled.attrs else done).append(gv.name_hint)
        if DIRECT in scheduled.attrs and TENSORIZED in scheduled.attrs:
            direct_int8.append(gv.name_hint)
    if direct:
        log(f"direct schedule for {len(direct)} convolutions"
            + (f" ({len(direct_int8)} int8 ones with {kernels.int8_intrin})" if direct_int8 else ""))
    if missed:  # a schedule that fails on some shape: the kernel runs, many times slower
        log(f"warning: {len(missed)} direct kernels could not take their schedule and got the basic one, many times "
            f"slower ({', '.join(missed[:3])}{' ...' if len(missed) > 3 else ''}): an edgecv bug, please report it")
    if flat:
        log(f"element-wise schedule for {len(flat)} kernels")
    if done or dot:
        log(f"basic schedule for {len(done) + len(dot)} kernels without tuning records"
            + (f" ({len(dot)} int8 ones with {kernels.int8_intrin})" if dot else "")
            + (f" ({len(kept)} others left as imported)" if kept else ""))
    return mod


TENSORIZED = "edgecv.int8_schedule"  # marks what int8_schedule scheduled (counted in the log)


def _first_that_fits(func, kernels: Kernels):
    from edgecv.compile.direct import direct_schedule

    schedules = ([lambda f: int8_schedule(f, kernels.int8_intrin)] if kernels.int8_intrin else []) \
        + ([lambda f: direct_schedule(f, kernels.direct_lanes)] if kernels.direct_lanes else []) + [basic_schedule] \
        + ([lambda f: elementwise_schedule(f, kernels.direct_lanes)] if kernels.direct_lanes else [])
    for schedule in schedules:
        try:
            scheduled = schedule(func)
        except (RuntimeError, ValueError):  # ScheduleError (a RuntimeError) and friends: try the next
            scheduled = None
        if scheduled is not None:
            return scheduled
    return None
