"""The generic LM: a params pytree plus a family module; forward, run-to-layer and run-from-layer.

A family module (one per Hugging Face `model_type`, registered in `FAMILIES`) provides:

- `MODEL_TYPE`, `BASE_PREFIX` (the base-model prefix of HF tensor names, e.g. "gpt_neox.");
- `Config`: a frozen dataclass exposing `n_layers`, `d_model`, `vocab_size`;
- `config_from_hf(dict) -> Config`, and `config_to_hf(Config) -> dict` where saving is supported;
- `tensor_specs(cfg) -> (global, per_layer)`: our key -> (HF names, canonical first; HF shape), with
  `{i}` standing for the layer index in per-layer names. Weights keep the HF layout, so converting
  is renaming plus stacking the per-layer tensors on a leading L axis (`params["layers"][key]`);
- `embed(params, cfg, ids_BT, pos_BT) -> x_BTD`, `context(cfg, pos_BT, mask_BT) -> dict` (constants
  shared by all blocks, e.g. rotary cos/sin or ALiBi), `block(layer_params, cfg, x_BTD, ctx) -> x_BTD`
  (ctx also carries "mask" and "layer", the block's absolute index as a traced int),
  `final(params, cfg, x_BTD) -> logits_BTV` (float32).

Blocks run under `lax.scan` over the stacked layer weights, so compile time does not grow with depth.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from crosscoder_jax.models import bloom, gpt2, gpt_neox, layers, llama, olmo, olmo2

FAMILIES: dict[str, ModuleType] = {m.MODEL_TYPE: m for m in (gpt_neox, olmo, olmo2, bloom, gpt2, llama)}


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked; the message names the problem and the fix."""


@flax.struct.dataclass
class LM:
    """A language model as a pytree: `params` are the leaves; `family` and `config` are static."""
    params: Any
    family: str = flax.struct.field(pytree_node=False)
    config: Any = flax.struct.field(pytree_node=False)


def family_module(family: str) -> ModuleType:
    """The registered family module for a HF `model_type`; a clear error listing the supported ones."""
    if family not in FAMILIES:
        raise CheckpointError(f"model_type {family!r} is not a supported LM family; supported: "
                              f"{sorted(FAMILIES)} (add one as a module in crosscoder_jax/models/ and a "
                              f"line in FAMILIES)")
    return FAMILIES[family]


def config_for(family: str, **hf_config_fields) -> Any:
    """The family's Config from Hugging Face config fields (e.g. hidden_size=96, num_hidden_layers=2)."""
    return family_module(family).config_from_hf(dict(hf_config_fields))


# --------------------------------------------------------------------------------------------
# Computation
# --------------------------------------------------------------------------------------------

def _default_mask(ids_BT: jax.Array, mask_BT: jax.Array | None) -> jax.Array:
    return jnp.ones(ids_BT.shape[:2], jnp.int32) if mask_BT is None else jnp.asarray(mask_BT).astype(jnp.int32)


def _context(lm: LM, mask_BT: jax.Array) -> tuple[jax.Array, dict]:
    pos_BT = layers.positions(mask_BT)
    ctx = dict(FAMILIES[lm.family].context(lm.config, pos_BT, mask_BT))
    ctx["mask"] = mask_BT
    return pos_BT, ctx


def _param_dtype(lm: LM) -> jnp.dtype:
    return lm.params["layers"][next(iter(lm.params["layers"]))].dtype


def _run_blocks(lm: LM, x_BTD: jax.Array, ctx: dict, lo: int, hi: int) -> jax.Array:
    """Blocks lo..hi-1 (0-based) in one scan."""
    if hi <= lo:
        return x_BTD
    fam, cfg = FAMILIES[lm.family], lm.config
    stack = lm.params["layers"]
    if (lo, hi) != (0, cfg.n_layers):
        stack = jax.tree.map(lambda a: a[lo:hi], stack)

    def step(x, p_and_i):
        p, i = p_and_i
        return fam.block(p, cfg, x, {**ctx, "layer": i}), None

    x_BTD, _ = jax.lax.scan(step, x_BTD, (stack, jnp.arange(lo, hi)))
    return x_BTD


def _check_layer(lm: LM, layer: int) -> None:
    if not -1 <= layer < lm.config.n_layers:
        raise ValueError(f"layer {layer} out of range for a {lm.config.n_layers}-layer model "
                         f"(0..{lm.config.n_layers - 1}, or -1 for the embedding output)")


def residual_at(lm: LM, input_ids_BT: jax.Array, attention_mask_BT: jax.Array | None, layer: int) -> jax.Array:
    """Residual stream after block `layer` (0-based; -1 = embeddings): resid_BTD in the parameter
    dtype, equal to transformers' hidden_states[layer + 1] (except for the last layer, whose
    transformers entry is after the final norm). Blocks after `layer` are not run."""
    _check_layer(lm, layer)
    mask_BT = _default_mask(input_ids_BT, attention_mask_BT)
    pos_BT, ctx = _context(lm, mask_BT)
    x_BTD = FAMILIES[lm.family].embed(lm.params, lm.config, input_ids_BT, pos_BT)
    return _run_blocks(lm, x_BTD, ctx, 0, layer + 1)


def _final_stream(lm: LM, resid_BTD: jax.Array, attention_mask_BT: jax.Array | None, layer: int) -> jax.Array:
    """Blocks layer+1..end from the residual after block `layer` (before the final norm)."""
    _check_layer(lm, layer)
    mask_BT = _default_mask(resid_BTD, attention_mask_BT)
    _, ctx = _context(lm, mask_BT)
    return _run_blocks(lm, resid_BTD.astype(_param_dtype(lm)), ctx, layer + 1, lm.config.n_layers)


def logits_from(lm: LM, resid_BTD: jax.Array, attention_mask_BT: jax.Array | None, layer: int) -> jax.Array:
    """Runs blocks layer+1..end, the final norm and the unembedding from the residual after block
    `layer`: logits_BTV float32. Differentiable w.r.t. `resid_BTD`."""
    x_BTD = _final_stream(lm, resid_BTD, attention_mask_BT, layer)
    return FAMILIES[lm.family].final(lm.params, lm.config, x_BTD).astype(jnp.float32)


def logits_at_from(lm: LM, resid_BTD: jax.Array, attention_mask_BT: jax.Array | None, layer: int,
                   position_B: jax.Array) -> jax.Array:
    """As `logits_from`, but the final norm and unembedding only at one position per row:
    logits_BV float32 (what a last-token metric needs; the unembedding is the costly part)."""
    x_BTD = _final_stream(lm, resid_BTD, attention_mask_BT, layer)
    x_B1D = jnp.take_along_axis(x_BTD, jnp.asarray(position_B)[:, None, None], axis=1)
    return FAMILIES[lm.family].final(lm.params, lm.config, x_B1D)[:, 0].astype(jnp.float32)


def forward(lm: LM, input_ids_BT: jax.Array, attention_mask_BT: jax.Array | None = None) -> jax.Array:
    """Next-token logits_BTV (float32). Positions come from the mask, so left and right padding
    both give the unpadded logits at real positions."""
    mask_BT = _default_mask(input_ids_BT, attention_mask_BT)
    pos_BT, ctx = _context(lm, mask_BT)
    fam = FAMILIES[lm.family]
    x_BTD = fam.embed(lm.params, lm.config, input_ids_BT, pos_BT)
    x_BTD = _run_blocks(lm, x_BTD, ctx, 0, lm.config.n_layers)
    return fam.final(lm.params, lm.config, x_BTD).astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# Parameters <-> Hugging Face state dicts
# --------------------------------------------------------------------------------------------

def _find(sd: Mapping[str, Any], names: tuple[str, ...], prefix: str) -> str | None:
    for n in names:
        for cand in (n, n[len(prefix):] if prefix and n.startswith(prefix) else None):
            if cand is not None and cand in sd:
                return cand
    return None


def params_from_state_dict(family: str, cfg: Any, sd: Mapping[str, Any], dtype=jnp.float32) -> dict:
    """Our params pytree from a HF state dict (name -> array-like); checks every shape against `cfg`.

    Names are accepted with or without the base-model prefix (e.g. "transformer."); tensors the
    family does not use (buffers such as rotary inv_freq or causal-mask biases) are ignored."""
    fam = family_module(family)
    g_specs, l_specs = fam.tensor_specs(cfg)

    def get(names: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
        key = _find(sd, names, fam.BASE_PREFIX)
        if key is None:
            raise CheckpointError(f"tensor {names[0]!r} is missing from the {family} checkpoint "
                                  f"(config: {cfg.n_layers} layers); the weights do not belong to this config")
        a = np.asarray(sd[key])
        if tuple(a.shape) != tuple(shape):
            raise CheckpointError(f"tensor {key!r} has shape {tuple(a.shape)} but config.json implies "
                                  f"{tuple(shape)}; the weights do not match the config (wrong config.json "
                                  f"or a different model's weights)")
        return a

    params: dict = {k: jnp.asarray(get(n, s), dtype) for k, (n, s) in g_specs.items()}
    params["layers"] = {
        k: jnp.asarray(np.stack([get(tuple(x.format(i=i) for x in n), s) for i in range(cfg.n_layers)]), dtype)
        for k, (n, s) in l_specs.items()}
    return params


def state_dict_from_params(lm: LM) -> dict[str, np.ndarray]:
    """HF-named float arrays (canonical names, per-layer tensors unstacked) from our params."""
    g_specs, l_specs = family_module(lm.family).tensor_specs(lm.config)
    out = {n[0]: np.asarray(lm.params[k]) for k, (n, _) in g_specs.items()}
    for k, (n, _) in l_specs.items():
        stacked = np.asarray(lm.params["layers"][k])
        for i in range(lm.config.n_layers):
            out[n[0].format(i=i)] = np.ascontiguousarray(stacked[i])
    return out


def init_params(family: str, config: Any, rng: jax.Array, dtype=jnp.float32) -> LM:
    """Random init as transformers does it: N(0, initializer_range) for matrices and embeddings,
    ones for norm scales, zeros for biases."""
    fam = family_module(family)
    g_specs, l_specs = fam.tensor_specs(config)
    std = getattr(config, "initializer_range", 0.02)
    keys = iter(jax.random.split(rng, len(g_specs) + len(l_specs)))

    def make(key: str, shape: tuple[int, ...]) -> jax.Array:
        k = next(keys)
        if key.endswith("_scale"):
            return jnp.ones(shape, dtype)
        if key.endswith("_bias"):
            return jnp.zeros(shape, dtype)
        return (std * jax.random.normal(k, shape, jnp.float32)).astype(dtype)

    params: dict = {k: make(k, s) for k, (_, s) in g_specs.items()}
    params["layers"] = {k: make(k, (config.n_layers, *s)) for k, (_, s) in l_specs.items()}
    return LM(params=params, family=family, config=config)
