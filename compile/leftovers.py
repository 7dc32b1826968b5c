"""A basic schedule for the kernels tuning left without a record, so none runs as the importer wrote it.

Left alone, such a kernel is a serial loop nest that materialises every step in full: a depthwise convolution at
256x256 allocates its padded input, its raw output and its output plus bias as three scratch buffers (24 MB on
SSD-512), which the runtime's workspace pool then keeps for the life of the process. The basic schedule runs the
output channels in parallel, folds the element-wise tail (bias, activation) into one loop nest computed per
channel right after that channel's reduction, and pads per channel inside the same loop where a channel reads
only its own input (depthwise); where each output channel reads every input channel (a full convolution), that
would pad the whole input once per output channel, so the padding is done once, in parallel, before. No scratch
beyond one channel's planes for depthwise kernels, and every core used. Only kernels of one reduction with
element-wise work around it are touched; for anything else, or anything the schedule primitives refuse, the
kernel is left as it was.
"""
from __future__ import annotations

SCHEDULED = "tirx.is_scheduled"  # what MetaSchedule's ApplyDatabase marks the kernels it scheduled with


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
    producers, tail = blocks[:at], blocks[at + 1:]
    for step in reversed(tail[1:]):         # activation into bias-add: one element-wise block
        sch.reverse_compute_inline(step)
    loops = sch.get_loops(blocks[at])
    outer = sch.fuse(loops[0], loops[1])    # batch x output channels
    sch.parallel(outer)
    if tail:
        sch.reverse_compute_at(tail[0], outer)
    for producer in reversed(producers):    # padding: per channel where a channel reads only its own (depthwise)
        if producers_per_channel:
            sch.compute_at(producer, outer)
            if _elements(sch, producer, after=outer) * _extent(sch, outer) > 1.5 * _written(sch, producer):
                raise _Redundant
        else:                               # else once, in parallel, before the reduction
            first = sch.get_loops(producer)
            sch.parallel(sch.fuse(first[0], first[1]) if len(first) > 1 else first[0])
    return sch.mod["main"].with_attr(SCHEDULED, True)


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


def schedule_leftovers(mod, log=lambda message: None):
    """``mod`` with ``basic_schedule`` applied to each PrimFunc not yet scheduled; logs how many it covered."""
    from tvm import relax

    done, kept = [], []
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function) or (func.attrs is not None and SCHEDULED in func.attrs
                                                and func.attrs[SCHEDULED]):
            continue
        try:
            scheduled = basic_schedule(func)
        except (RuntimeError, ValueError):  # ScheduleError (a RuntimeError) and friends: it stays as it is
            scheduled = None
        if scheduled is None:
            kept.append(gv.name_hint)
            continue
        mod[gv] = scheduled
        done.append(gv.name_hint)
    if done:
        log(f"basic schedule for {len(done)} kernels without tuning records"
            + (f" ({len(kept)} others left as imported)" if kept else ""))
    return mod
