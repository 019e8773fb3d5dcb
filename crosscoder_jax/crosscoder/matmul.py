"""The crosscoder's matmuls: 2-D dots with float32 accumulation, laid out the way XLA's fast
matmul libraries take them, forward and backward.

A 2-D dot runs at the matmul peak on XLA's CPU backend only in the forms `A[i,c] B[c,j]` and
`A[i,c] B[j,c]` (the contracted index is the minor one of the left operand). The weight gradients
contract over the batch, the major index of both operands (`x[b,k] g[b,f]`): XLA runs those as
float32 Eigen dots even for bf16 operands, at ~1/3 of the bf16 rate (measured: 0.81 s vs 0.21 s
at B = 4096, C*D = 1536, F = 16384). So each dot here picks its left operand, and transposes the
cheaper of operand and result physically, to land in a fast form. A plain `.T` does not do it: the
algebraic simplifier folds it back into the dot's dimension numbers; a blocked transpose
(`transpose`) is the same data but is not folded.

bf16 operands go through a custom VJP so the backward dots are bf16 x bf16 -> f32 too (plain
autodiff would multiply the float32 cotangent with the bf16 operand, i.e. run the backward in
float32). Callers pass 2-D dots only: XLA's CPU runtime has no bf16 x bf16 -> f32 kernel for some
dots with several free or contracted axes (e.g. "bf,bcd->fcd").
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax


def transpose(a: jax.Array) -> jax.Array:
    """`a.T` for a 2-D array, written as a blocked 3-D transpose so XLA materialises it instead of
    folding it into the consuming dot."""
    n, m = a.shape
    blk = next(b for b in (64, 32, 16, 8, 4, 2, 1) if n % b == 0)
    return a.reshape(n // blk, blk, m).transpose(2, 0, 1).reshape(m, n)


def apart(fn: Callable, x: Any) -> Any:
    """fn(x), computed in a fusion of its own on the CPU backend, where XLA would otherwise fuse it
    into its consumers in a slower form. A conditional's branch is a fusion boundary that XLA keeps
    (an optimization barrier it removes): both branches run fn, and the predicate only keeps XLA from
    folding the conditional away. Elsewhere plain fn(x): GPU and TPU compilers choose well, and their
    conditionals read the predicate back to the host."""
    if jax.default_backend() != "cpu":
        return fn(x)
    first = jax.tree.leaves(x)[0].reshape(-1)[0]
    return lax.cond(jnp.isfinite(first), fn, fn, x)


def _parse(subscripts: str) -> tuple[str, str, str]:
    ins, out = subscripts.split("->")
    a, b = ins.split(",")
    if not (len(a) == len(b) == len(out) == 2):
        raise ValueError(f"matmul takes 2-D dots 'ik,kj->ij' (in any index order), got {subscripts!r}")
    return a, b, out


def dot2d(subscripts: str, x: jax.Array, y: jax.Array, dtype=jnp.float32) -> jax.Array:
    """einsum `subscripts` (a 2-D dot with one contracted index) of x and y cast to `dtype`, float32
    result; on the CPU backend emitted as `L[i,c] R[., .]` with the fewest elements transposed
    physically (GPU and TPU compilers pick their own layouts: the plain dot runs there)."""
    a, b, out = _parse(subscripts)
    (c,) = set(a) & set(b)
    x, y = x.astype(dtype), y.astype(dtype)
    if jax.default_backend() != "cpu":
        return jnp.einsum(subscripts, x, y, preferred_element_type=jnp.float32)
    best = None
    for lhs, ls, rhs, rs in ((x, a, y, b), (y, b, x, a)):
        i = ls.replace(c, "")
        j = rs.replace(c, "")
        cost = (lhs.size if ls[0] == c else 0) + (0 if out == i + j else lhs.shape[ls.index(i)] * rhs.shape[rs.index(j)])
        if best is None or cost < best[0]:
            best = (cost, lhs, ls, rhs, rs, i, j)
    _, lhs, ls, rhs, rs, i, j = best
    if ls[0] == c:
        lhs, ls = transpose(lhs), ls[::-1]
    res = jnp.einsum(f"{ls},{rs}->{i}{j}", lhs, rhs, preferred_element_type=jnp.float32)
    return res if out == i + j else transpose(res)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _matmul_vjp(subscripts: str, x: jax.Array, y: jax.Array, dtype) -> jax.Array:
    return dot2d(subscripts, x, y, dtype)


def _matmul_fwd(subscripts, x, y, dtype):
    return dot2d(subscripts, x, y, dtype), (x, y)


def _matmul_bwd(subscripts, dtype, res, g):
    # For "X,Y->Z" with every index of X in Y or Z (and of Y in X or Z): dX = "Z,Y->X", dY = "X,Z->Y".
    x, y = res
    a, b, out = _parse(subscripts)
    return (dot2d(f"{out},{b}->{a}", g, y, dtype).astype(x.dtype),
            dot2d(f"{a},{out}->{b}", x, g, dtype).astype(y.dtype))


_matmul_vjp.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(subscripts: str, x: jax.Array, y: jax.Array, dtype: str = "float32") -> jax.Array:
    """2-D einsum with `dtype` operands ("float32" or "bfloat16") and float32 accumulation, forward
    and backward. E.g. `matmul("bk,kf->bf", x_BK, W_KF, "bfloat16")`.

    bfloat16 runs every dot, the gradients' too, in a fast layout. float32 stays plain autodiff:
    XLA's float32 dots are all Eigen's, where the relayout won on one weight gradient and lost on
    the other (0.76 -> 0.61 s, 0.58 -> 0.67 s at the shapes above)."""
    _parse(subscripts)
    if jnp.dtype(dtype) == jnp.float32:
        return jnp.einsum(subscripts, x.astype(jnp.float32), y.astype(jnp.float32),
                          preferred_element_type=jnp.float32)
    return _matmul_vjp(subscripts, x, y, jnp.dtype(dtype))
