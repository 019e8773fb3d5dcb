"""Registry of crosscoder activation functions.

An activation function is an object with the methods of `base.Activation`: its own parameters and
state, training-mode and inference-mode codes, its loss terms, and its exported tensors. Adding
one is one module here plus one line in `_REGISTRY`.
"""

from __future__ import annotations

from crosscoder_jax.crosscoder.activations.base import Activation, PenaltyContext
from crosscoder_jax.crosscoder.activations import batchtopk, jumprelu, l1, topk

_REGISTRY: dict[str, Activation] = {
    "l1": l1.L1(),
    "topk": topk.TopK(),
    "batchtopk": batchtopk.BatchTopK(),
    "jumprelu": jumprelu.JumpReLU(),
}


def get(name: str) -> Activation:
    """The activation function registered as `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_REGISTRY)} "
                         "(register a new one in crosscoder_jax/crosscoder/activations/__init__.py)") from None


def register(name: str, activation: Activation) -> None:
    """Adds an activation function under `name` (e.g. from user code)."""
    _REGISTRY[name] = activation


def names() -> list[str]:
    return sorted(_REGISTRY)


__all__ = ["Activation", "PenaltyContext", "get", "register", "names"]
