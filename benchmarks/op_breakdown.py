"""Where a train step's time goes: every convolution and matmul in the step's jaxpr (forward and
backward, as JAX differentiated them), each distinct one compiled and timed alone on one device,
less the cost of calling a compiled function (measured on an empty one with the same inputs).

For layers large enough to keep every core busy, their sum is close to what they cost inside the
step, so `reference step time / sum` says how close recog could come to a reference by changes
outside these kernels alone (tiny ones cost more alone than in the step, where XLA overlaps
independent ops). Used by train_step.py (--breakdown).
"""

import dataclasses

import jax
import jax.extend.core as jax_core
import numpy as np

HEAVY = ("conv_general_dilated", "dot_general")


@dataclasses.dataclass
class Op:
    """One distinct heavy op of the step: how often the step runs it, and what it costs alone."""

    equation: jax_core.JaxprEqn
    count: int
    seconds: float = 0.0
    flops: float = 0.0

    @property
    def label(self) -> str:
        shapes = [
            "x".join(map(str, v.aval.shape))
            for v in (*self.equation.invars, *self.equation.outvars)
        ]
        params = self.equation.params
        name = "conv" if self.equation.primitive.name == "conv_general_dilated" else "matmul"
        label = f"{name} {shapes[0]} * {shapes[1]} -> {shapes[2]}"
        if name == "conv":
            extras = {
                "stride": params["window_strides"],
                "lhs_dilation": params["lhs_dilation"],
                "groups": params["feature_group_count"] * params["batch_group_count"],
            }
            label += "".join(
                f", {key} {value}"
                for key, value in extras.items()
                if value not in (1, (1,) * len(params["window_strides"]))
            )
        return label


def heavy_ops(jaxpr: jax_core.Jaxpr, repeat: int = 1, found=None) -> list[Op]:
    """The distinct convolutions and matmuls of `jaxpr` and its sub-jaxprs (a scan's body counts
    `length` times), most frequent first."""
    found = {} if found is None else found
    for equation in jaxpr.eqns:
        if equation.primitive.name in HEAVY:
            key = (
                equation.primitive.name,
                tuple((v.aval.shape, str(v.aval.dtype)) for v in equation.invars),
                repr(sorted(equation.params.items())),
            )
            if key in found:
                found[key].count += repeat
            else:
                found[key] = Op(equation, repeat)
        times = equation.params["length"] if equation.primitive.name == "scan" else 1
        for sub in sub_jaxprs_run_here(equation):
            heavy_ops(sub, repeat * times, found)
    return sorted(found.values(), key=lambda op: -op.count)


def sub_jaxprs_run_here(equation: jax_core.JaxprEqn) -> list[jax_core.Jaxpr]:
    """The sub-jaxprs of `equation` that this machine's platform runs: of a
    `lax.platform_dependent` choice, only the branch for this platform."""
    platforms = equation.params.get("branches_platforms")
    if platforms is None:
        return list(jax_core.jaxprs_in_params(equation.params))
    platform = jax.devices()[0].platform
    index = next(i for i, names in enumerate(platforms) if names is None or platform in names)
    return [equation.params["branches"][index].jaxpr]


def time_op(op: Op, call_seconds, steps: int) -> None:
    """Compile `op` alone on random inputs of its shapes and time it (median of `steps` calls,
    less the median call of a compiled function that only returns a scalar of its input)."""
    equation = op.equation
    params = dict(equation.params)
    if "out_sharding" in params:
        params["out_sharding"] = None  # the step's mesh is not around here
    rng = np.random.default_rng(0)  # on the host: jax.random would compile a program per shape
    inputs = [
        jax.device_put(rng.standard_normal(v.aval.shape, np.float32).astype(v.aval.dtype))
        for v in equation.invars
    ]
    compiled = jax.jit(lambda *args: equation.primitive.bind(*args, **params)).lower(*inputs)
    compiled = compiled.compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    op.flops = cost.get("flops", 0.0) if cost else 0.0
    empty = jax.jit(lambda *args: args[0].ravel()[0]).lower(*inputs).compile()
    overhead = np.median(call_seconds(lambda: empty(*inputs), steps))
    op.seconds = max(
        0.0, float(np.median(call_seconds(lambda: compiled(*inputs), steps)) - overhead)
    )


def breakdown(step_function, state, batch, call_seconds, steps: int) -> list[Op]:
    """Every distinct convolution and matmul of `step_function(state, batch)`, timed alone,
    costliest first."""
    ops = heavy_ops(jax.make_jaxpr(step_function)(state, batch).jaxpr)
    for op in ops:
        time_op(op, call_seconds, steps)
    return sorted(ops, key=lambda op: -op.count * op.seconds)
