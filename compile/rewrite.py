"""Rewriting the imported graph's convolutions into edgecv's own kernels (int8: ``quantize``; float32: ``direct``).

Both work the same way: the weights are bound as constants and the convolutions made channels-last
(``channels_last``), a Relax mutator replaces each convolution its ``rewrite`` function takes (``rewrite_convolutions``,
given each one parsed as a ``Conv``), and the constants are lifted back into parameters after the model's inputs
(``lift_constants``: the params file, not the library).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


def channels_last(mod, params: list):
    """The imported module with its weights bound as constants and its convolutions channels-last (NHWC input,
    OHWI weights), and how many inputs ``main`` takes before the weights."""
    import tvm
    from tvm import relax

    main = mod["main"]
    num_input = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else 1
    bound = {v: tvm.runtime.tensor(p.numpy() if hasattr(p, "numpy") else p)
             for v, p in zip(main.params[num_input:], params)}
    return tvm.transform.Sequential([
        relax.transform.BindParams("main", bound),
        relax.transform.FoldConstant(),  # ReLU6's bounds arrive as where(isnan(c), inf, c)
        _activations_as_ops(),
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
        relax.transform.FoldConstant(),
    ])(mod), num_input


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


@dataclass(frozen=True)
class Conv:
    """A channels-last convolution with constant weights, as the rewriters see it."""

    x: object                     # the Relax input expression (NHWC)
    shape: tuple[int, ...]        # its static shape
    dtype: str
    weights: np.ndarray           # OHWI
    groups: int
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    nchw: object = None           # the model's NCHW input, where ``x`` is its transpose (``_nchw_source``): a
                                  # kernel reading it directly saves the transpose, a pass over the input

    @property
    def is_depthwise(self) -> bool:
        """One filter per input channel (channel multiplier 1)."""
        k, _, _, c = self.weights.shape
        return self.groups > 1 and self.groups == k == self.shape[3] and c == 1

    def out_size(self) -> tuple[int, int]:
        _, r, s, _ = self.weights.shape
        (sh, sw), (top, left, bottom, right) = self.strides, self.padding
        return (self.shape[1] + top + bottom - r) // sh + 1, (self.shape[2] + left + right - s) // sw + 1


def parse_conv(call, lookup=lambda var: None) -> Conv | None:
    """``call`` as a ``Conv`` if it is a ``relax.nn.conv2d`` the rewriters can take: NHWC input of static shape,
    constant OHWI weights, NHWC output, no dilation; else None. ``lookup``: a variable's bound expression, if known
    (``Conv.nchw``)."""
    import tvm

    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
        return None
    x, weight, attrs = call.args[0], call.args[1], call.attrs
    shape = static_shape(x)
    if not (isinstance(weight, tvm.ir.expr.Constant) and shape and attrs.data_layout == "NHWC"
            and attrs.kernel_layout == "OHWI" and attrs.out_layout in ("", "NHWC")
            and all(int(d) == 1 for d in attrs.dilation)):
        return None
    return Conv(x, shape, str(x.ty.dtype), weight.value.numpy(), int(attrs.groups),
                tuple(int(v) for v in attrs.strides), tuple(int(v) for v in attrs.padding), _nchw_source(x, lookup))


def _nchw_source(x, lookup):
    """The model's NCHW input, if ``x`` is its NHWC transpose (``ConvertLayout``'s ``permute_dims`` to axes 0, 2, 3,
    1), else None. Only an input: a tensor computed inside the graph stays channels-last end to end (read NCHW, the
    kernels before it would be made to write NCHW)."""
    import tvm

    bound = lookup(x) if isinstance(x, tvm.relax.Var) else x
    if not (isinstance(bound, tvm.relax.Call) and isinstance(bound.op, tvm.ir.Op)
            and bound.op.name == "relax.permute_dims" and bound.attrs.axes is not None
            and [int(a) for a in bound.attrs.axes] == [0, 2, 3, 1]):
        return None
    source = bound.args[0]
    is_input = isinstance(source, tvm.relax.Var) and not isinstance(source, tvm.relax.DataflowVar) \
        and lookup(source) is None
    return source if is_input and static_shape(source) else None


def static_shape(x) -> tuple[int, ...] | None:
    """The static shape of a Relax tensor expression, or None."""
    import tvm
    from tvm import relax

    ty = x.ty
    if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr) \
            and all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values):
        return tuple(int(d) for d in ty.shape.values)
    return None


def rewrite_convolutions(mod, rewrite) -> tuple[object, Counter]:
    """``mod`` (channels-last, weights constant) with each convolution ``rewrite(builder, conv)`` takes replaced:
    it returns ``(expression, kind)`` or None to keep the convolution. Also returns how many of each kind, and
    ``kept``."""
    from tvm import relax

    counts: Counter = Counter()

    @relax.expr_functor.mutator
    class Convolutions(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            conv = parse_conv(call, self.lookup_binding)
            done = rewrite(self.builder_, conv) if conv is not None else None
            if conv is not None:
                counts[done[1] if done else "kept"] += 1
            return done[0] if done else call

    mutator = Convolutions(mod)
    main = mutator.visit_expr(mod["main"])
    mod = mutator.builder_.get()  # with the new kernels' PrimFuncs
    mod["main"] = main
    return relax.transform.DeadCodeElimination(["main"])(relax.transform.FoldConstant()(mod)), counts


def const(array: np.ndarray):
    """A Relax constant holding ``array`` (lifted into a parameter by ``lift_constants``)."""
    import tvm
    from tvm import relax

    return relax.const(tvm.runtime.tensor(array))


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
