"""Export to and import from dictionary_learning's fork, SAELens and the paper's code.

Every crosscoder here has unequal per-checkpoint scales (0.5, 4, 1.7) and unequal decoder row
norms (0.2 to 2 per row and checkpoint), so a format that ignored the scales or the norm weighting
of our top-k scores would give other codes. Checked: ours -> format -> ours gives the same codes and
reconstructions; the files carry the key names, shapes, dtypes and config fields the libraries
define (constants below, read from their source); a float64 NumPy reimplementation of each
library's own encode/decode on the exported file gives our codes; refusals say why. The slow test
loads the exports through the real sae_lens and torch (and the fork, where a checkout is given).
"""

from __future__ import annotations

import json
import os
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from conftest import ROOT, subprocess_env
from crosscoder_jax.crosscoder import Spec, load_crosscoder, save_crosscoder
from crosscoder_jax.crosscoder.interchange import (InterchangeError, export_run, export_to, import_from, import_run,
                                                   torch_zip)

# --- The formats as their libraries define them -------------------------------------------------
# science-of-finetuning/dictionary_learning @173f7fa, dictionary_learning/dictionary.py: buffers of
# NormalizableMixin.__init__, CrossCoderEncoder.weight (num_layers, activation_dim, dict_size) / .bias,
# CrossCoderDecoder.bias (num_layers, activation_dim) / .weight (num_layers, dict_size, activation_dim),
# CrossCoder's code_normalization_id (th.tensor(int): int64), BatchTopKCrossCoder's k (th.int) and
# threshold (float32). Shapes in letters: C = num_layers, D = activation_dim, F = dict_size.
DL_TENSORS = {"target_rms": ((), "float32"), "activation_mean": ("CD", "float32"), "activation_std": ("CD", "float32"),
              "activation_global_scale": ("C", "float32"), "code_normalization_id": ((), "int64"),
              "encoder.weight": ("CDF", "float32"), "encoder.bias": ("F", "float32"),
              "decoder.weight": ("CFD", "float32"), "decoder.bias": ("CD", "float32")}
DL_BATCHTOPK_TENSORS = {**DL_TENSORS, "k": ((), "int32"), "threshold": ((), "float32")}
# config.json: huggingface_hub PyTorchModelHubMixin (__new__: jsonable __init__ defaults + passed values;
# save_pretrained) for CrossCoder(activation_dim, dict_size, num_layers) and
# BatchTopKCrossCoder(activation_dim, dict_size, num_layers, k=...).
DL_CONFIG_KEYS = {"activation_dim", "activation_mean", "activation_std", "code_normalization",
                  "code_normalization_alpha_cc", "code_normalization_alpha_sae", "dict_size", "encoder_layers",
                  "init_with_transpose", "latent_processor", "norm_init_scale", "num_decoder_layers", "num_layers",
                  "same_init_for_all_layers", "target_rms"}
DL_BATCHTOPK_CONFIG_KEYS = {"activation_dim", "activation_mean", "activation_std", "code_normalization", "dict_size",
                            "k", "norm_init_scale", "num_layers", "target_rms"}
DL_CROSSCODER_NORM_ID = 1  # CodeNormalization.CROSSCODER = auto() = 1
# sae_lens 6.54.12: constants.py (file names); saes/sae.py SAEConfig fields + to_dict ("metadata",
# "architecture"); saes/topk_sae.py TopKSAEConfig (k, rescale_acts_by_decoder_norm);
# saes/sae.py initialize_weights (W_dec [d_sae, d_in], W_enc [d_in, d_sae], b_dec [d_in]),
# standard/topk/jumprelu b_enc [d_sae], jumprelu threshold [d_sae].
SAELENS_FILES = {"cfg.json", "sae_weights.safetensors"}
SAELENS_CFG_KEYS = {"d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
                    "reshape_activations", "metadata", "architecture"}
SAELENS_TOPK_KEYS = SAELENS_CFG_KEYS | {"k", "rescale_acts_by_decoder_norm"}
SAELENS_TENSORS = {"W_enc": "DF", "b_enc": "F", "W_dec": "FD", "b_dec": "D"}
SAELENS_JUMPRELU_TENSORS = {**SAELENS_TENSORS, "threshold": "F"}
# bayazitdeniz/crosscoding-through-time @df47cc7: crosscoder.py (W_enc [n_models, d_in, d_hidden],
# W_dec [d_hidden, n_models, d_in], b_enc, b_dec [n_models, d_in]; BatchTopKCrossCoder buffers k (int),
# threshold (float32)); CrossCoder.save names "<n>.pt" / "<n>_cfg.json"; train_crosscoder_revision.py
# default_cfg keys, in order.
PAPER_TENSORS = {"W_enc": "CDF", "W_dec": "FCD", "b_enc": "F", "b_dec": "CD"}
PAPER_CFG_KEYS = ["seed", "batch_size", "buffer_mult", "num_val_batches", "lr", "num_tokens", "l1_warmup_pct",
                  "l1_coeff", "beta1", "beta2", "d_in", "dict_size", "seq_len", "enc_dtype", "model_name",
                  "revision_list", "site", "device", "model_batch_size", "log_every", "val_log_every", "save_every",
                  "dec_init_norm", "hook_point", "wandb_project", "wandb_entity", "wandb_name", "n_models",
                  "model_type", "do_ce_eval", "nnsight", "remove_bos", "estimated_act_norm_list", "batch_topk_final",
                  "batch_topk_init", "topk_annealing_steps", "threshold_start_step", "threshold_beta",
                  "dead_feature_threshold", "auxk_alpha"]

D, F, K = 8, 32, 4
SCALES = (0.5, 4.0, 1.7)
SUPPORTED = [("dictionary_learning", 2, "l1"), ("dictionary_learning", 2, "batchtopk"), ("paper", 3, "l1"),
             ("paper", 2, "batchtopk"), ("saelens", 1, "l1"), ("saelens", 1, "jumprelu"),
             ("saelens", 1, "batchtopk"), ("saelens", 1, "topk:equal"), ("saelens", 1, "batchtopk:equal:nothreshold")]
# ":equal": all decoder rows of one norm; ":nothreshold": batchtopk before its threshold (each row's top k)


def _shape(letters, C):
    return tuple({"C": C, "D": D, "F": F}[ch] for ch in letters)


def cc_path(tmp: Path, C: int, activation: str, equal_norms: bool, theta: float | None) -> Path:
    return tmp / f"cc_{C}_{activation}_{equal_norms}_{theta}.safetensors"


def make_crosscoder(tmp: Path, C: int, activation: str, *, equal_norms: bool = False, theta: float | None = 0.8,
                    seed: int = 0):
    """A saved-and-loaded crosscoder: scales SCALES[:C], decoder rows of norms 0.2-2 (or all 1.3)."""
    rng = np.random.default_rng(seed)
    W_dec = rng.normal(size=(F, C, D))
    norms = np.full((F, C, 1), 1.3) if equal_norms else rng.uniform(0.2, 2.0, size=(F, C, 1))
    W_dec *= norms / np.linalg.norm(W_dec, axis=-1, keepdims=True)
    params = {"W_enc": rng.normal(size=(C, D, F)) * 0.5, "b_enc": rng.normal(size=F) * 0.3 - 0.3, "W_dec": W_dec,
              "b_dec": rng.normal(size=(C, D)) * 0.1}
    state = {}
    if activation == "jumprelu":
        params["log_threshold"] = np.log(rng.uniform(0.1, 1.0, F))
    if activation == "batchtopk":
        state["threshold"] = np.float32(-1.0 if theta is None else theta)
    spec = Spec(n_checkpoints=C, d_model=D, dict_size=F, activation=activation, k=K)
    path = cc_path(tmp, C, activation, equal_norms, theta)
    save_crosscoder(path, {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}, state, spec,
                    list(SCALES[:C]), [f"step{c}" for c in range(C)],
                    extra_meta={"model": "EleutherAI/pythia-1b", "layer": 8, "steps": 100})
    return load_crosscoder(path)


def raw_inputs(cc, n: int = 64, seed: int = 1) -> np.ndarray:
    """Raw activations [n, C, D] whose normalised version has unit-variance entries."""
    x = np.random.default_rng(seed).normal(size=(n, cc.spec.n_checkpoints, D))
    return (x / np.asarray(cc.scales)[None, :, None]).astype(np.float32)


def close(a, b, what=""):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())), err_msg=what)


def case(tmp, fmt, C, act):
    name, *flags = act.split(":")
    cc = make_crosscoder(tmp, C, name, equal_norms="equal" in flags, theta=None if "nothreshold" in flags else 0.8)
    out = tmp / f"{fmt}_{C}_{act.replace(':', '_')}"
    files = export_to(cc, fmt, out)
    return cc, out, files


# --- The libraries' encode and decode, in float64 NumPy ------------------------------------------

def dictionary_learning_reference(out: Path, x_BCD: np.ndarray):
    """The fork's CrossCoder / BatchTopKCrossCoder: normalize_activations, CrossCoderEncoder (relu),
    BatchTopKCrossCoder.encode(use_threshold=True) with CROSSCODER code normalisation, decode +
    denormalize_activations (keep_relative_variance=True)."""
    t = {k: np.asarray(v, np.float64) for k, v in load_file(str(out / "model.safetensors")).items()}
    has_norm = not (np.isnan(t["activation_mean"]).any() or np.isnan(t["activation_std"]).any())
    g_C, mean_CD = t["activation_global_scale"], t["activation_mean"]
    x = (x_BCD - mean_CD) * g_C[None, :, None] if has_norm else np.asarray(x_BCD, np.float64)
    post = np.maximum(np.einsum("bld,ldf->bf", x, t["encoder.weight"]) + t["encoder.bias"], 0.0)
    f = post
    if "threshold" in t:
        code_norm = np.linalg.norm(t["decoder.weight"], axis=2).sum(axis=0, keepdims=True)
        f = post * (post * code_norm > t["threshold"])
    xhat = np.einsum("bf,lfd->bld", f, t["decoder.weight"]) + t["decoder.bias"]
    if has_norm:
        xhat = xhat / (g_C[None, :, None] + 1e-8) + mean_CD
    return f, xhat


def saelens_reference(out: Path, x_BCD: np.ndarray):
    """SAELens StandardSAE / JumpReLUSAE / TopKSAE encode (process_sae_in, TopK: top k of hidden_pre,
    then relu) and decode (act_times_W_dec with rescale_acts_by_decoder_norm)."""
    cfg = json.loads((out / "cfg.json").read_text())
    t = {k: np.asarray(v, np.float64) for k, v in load_file(str(out / "sae_weights.safetensors")).items()}
    x = np.asarray(x_BCD[:, 0], np.float64) - t["b_dec"] * cfg["apply_b_dec_to_input"]
    h = x @ t["W_enc"] + t["b_enc"]
    n_F = np.linalg.norm(t["W_dec"], axis=-1)
    rescale = cfg["architecture"] == "topk" and cfg["rescale_acts_by_decoder_norm"]
    if cfg["architecture"] == "standard":
        f = np.maximum(h, 0.0)
    elif cfg["architecture"] == "jumprelu":
        f = np.maximum(h, 0.0) * (h > t["threshold"])
    else:
        h = h * n_F if rescale else h
        idx = np.argsort(-h, axis=-1, kind="stable")[:, :cfg["k"]]
        f = np.zeros_like(h)
        np.put_along_axis(f, idx, np.maximum(np.take_along_axis(h, idx, -1), 0.0), -1)
    xhat = (f / n_F if rescale else f) @ t["W_dec"] + t["b_dec"]
    return f, xhat[:, None, :]


def paper_reference(out: Path, x_BCD: np.ndarray):
    """The paper's CrossCoder.encode / BatchTopKCrossCoder.encode in eval mode (crosscoder.py) on inputs
    scaled by estimated_act_norm_list (buffer.py), decoded and unscaled."""
    cfg = json.loads((out / "0_cfg.json").read_text())
    t = {k: np.asarray(v, np.float64) for k, v in torch_zip.load_state_dict(out / "0.pt").items()}
    s = np.asarray(cfg["estimated_act_norm_list"])
    post = np.maximum(np.einsum("bnd,ndh->bh", x_BCD * s[None, :, None], t["W_enc"]) + t["b_enc"], 0.0)
    f = post
    if cfg["batch_topk_final"] is not None:
        f = post * (post * np.linalg.norm(t["W_dec"], axis=2).sum(axis=1)[None] > t["threshold"])
    xhat = np.einsum("bh,hnd->bnd", f, t["W_dec"]) + t["b_dec"]
    return f, xhat / s[None, :, None]


REFERENCE = {"dictionary_learning": dictionary_learning_reference, "saelens": saelens_reference,
             "paper": paper_reference}


# --- Tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,C,act", SUPPORTED)
def test_round_trip_and_the_libraries_encode_give_our_codes(tmp_path, fmt, C, act):
    cc, out, _ = case(tmp_path, fmt, C, act)
    x = raw_inputs(cc)
    f, xhat = np.asarray(cc.encode(x)), np.asarray(cc.reconstruct(x))
    assert 0.05 < np.mean(f > 0) < 0.8  # a selection that could go wrong
    back = import_from(out, fmt)
    same_rule = "topk" if act.endswith("nothreshold") else cc.spec.activation  # each row's top k
    assert back.spec.activation == same_rule and back.checkpoints == cc.checkpoints
    np.testing.assert_allclose(back.scales, cc.scales, rtol=1e-6)
    close(back.encode(x), f, "codes after the round trip")
    close(back.reconstruct(x), xhat, "reconstructions after the round trip")
    ref_f, ref_xhat = REFERENCE[fmt](out, x.astype(np.float64))
    close(ref_f, f, f"{fmt}'s encode on the exported file")
    close(ref_xhat, xhat, f"{fmt}'s decode on the exported file")


@pytest.mark.parametrize("act", ["l1", "batchtopk"])
def test_dictionary_learning_files_are_the_forks_layout(tmp_path, act):
    cc, out, files = case(tmp_path, "dictionary_learning", 2, act)
    assert sorted(p.name for p in files) == ["config.json", "model.safetensors"] == sorted(os.listdir(out))
    tensors = load_file(str(out / "model.safetensors"))
    expected = DL_BATCHTOPK_TENSORS if act == "batchtopk" else DL_TENSORS
    assert {k: (v.shape, str(v.dtype)) for k, v in tensors.items()} == {
        k: (_shape(s, 2), dt) for k, (s, dt) in expected.items()}
    assert int(tensors["code_normalization_id"]) == DL_CROSSCODER_NORM_ID
    np.testing.assert_allclose(tensors["activation_global_scale"], SCALES[:2], rtol=1e-6)
    std = tensors["activation_std"].astype(np.float64)  # consistent with the global scale, as the fork computes it
    np.testing.assert_allclose(1.0 / np.sqrt((std**2).sum(-1) + 1e-8), SCALES[:2], rtol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert set(config) == (DL_BATCHTOPK_CONFIG_KEYS if act == "batchtopk" else DL_CONFIG_KEYS)
    assert (config["activation_dim"], config["dict_size"], config["num_layers"]) == (D, F, 2)
    assert config["code_normalization"] == "CROSSCODER" and config["activation_mean"] is None
    if act == "batchtopk":
        assert config["k"] == int(tensors["k"]) == K and float(tensors["threshold"]) == pytest.approx(0.8)
    with safe_open(str(out / "model.safetensors"), framework="numpy") as fh:
        ours = json.loads(fh.metadata()["crosscoder_jax"])
    assert ours["checkpoints"] == ["step0", "step1"] and ours["spec"]["activation"] == act


@pytest.mark.parametrize("act,arch", [("l1", "standard"), ("jumprelu", "jumprelu"), ("batchtopk", "jumprelu"),
                                      ("topk:equal", "topk")])
def test_saelens_files_are_saelens_layout(tmp_path, act, arch):
    cc, out, files = case(tmp_path, "saelens", 1, act)
    assert {p.name for p in files} == SAELENS_FILES == set(os.listdir(out))
    cfg = json.loads((out / "cfg.json").read_text())
    assert set(cfg) == (SAELENS_TOPK_KEYS if arch == "topk" else SAELENS_CFG_KEYS)
    assert cfg["architecture"] == arch and (cfg["d_in"], cfg["d_sae"]) == (D, F)
    assert (cfg["dtype"], cfg["apply_b_dec_to_input"], cfg["normalize_activations"]) == ("float32", False, "none")
    assert cfg["metadata"]["hook_name"] == "blocks.8.hook_resid_post"
    assert cfg["metadata"]["model_name"] == "EleutherAI/pythia-1b" and cfg["metadata"]["sae_lens_version"]
    if arch == "topk":
        assert cfg["k"] == K and cfg["rescale_acts_by_decoder_norm"] is False
    tensors = load_file(str(out / "sae_weights.safetensors"))
    expected = SAELENS_JUMPRELU_TENSORS if arch == "jumprelu" else SAELENS_TENSORS
    assert {k: (v.shape, str(v.dtype)) for k, v in tensors.items()} == {
        k: (_shape(s, 1), "float32") for k, s in expected.items()}
    if act == "batchtopk":  # SAELens's own batchtopk -> jumprelu, with our per-latent threshold theta / dn
        dn = np.linalg.norm(np.asarray(cc.params["W_dec"], np.float64), axis=-1).sum(-1)
        np.testing.assert_allclose(tensors["threshold"], 0.8 / dn, rtol=1e-5)
        assert cfg["metadata"]["training_architecture"] == "batchtopk"


@pytest.mark.parametrize("act", ["l1", "batchtopk"])
def test_paper_files_are_the_papers_layout(tmp_path, act):
    cc, out, files = case(tmp_path, "paper", 2, act)
    assert sorted(p.name for p in files) == ["0.pt", "0_cfg.json"]
    cfg = json.loads((out / "0_cfg.json").read_text())
    assert list(cfg) == PAPER_CFG_KEYS
    assert cfg["estimated_act_norm_list"] == pytest.approx(SCALES[:2], rel=1e-6)
    assert (cfg["d_in"], cfg["dict_size"], cfg["n_models"], cfg["enc_dtype"]) == (D, F, 2, "fp32")
    assert cfg["revision_list"] == "step0-step1" and cfg["hook_point"] == "blocks.9.hook_resid_pre"
    assert cfg["model_name"] == "EleutherAI/pythia-1b" and cfg["model_type"] == (
        "EleutherAI/pythia-1b/step0-EleutherAI/pythia-1b/step1")
    assert cfg["batch_topk_final"] == (K if act == "batchtopk" else None)
    # the torch.save zip, read without our reader: records, the pickle's globals, the raw storages
    with zipfile.ZipFile(out / "0.pt") as zf:
        names = zf.namelist()
        assert {"0/data.pkl", "0/byteorder", "0/version", "0/data/0"} <= set(names)
        assert zf.read("0/version") == b"3\n" and zf.read("0/byteorder") == b"little"
        globals_ = {arg for op, arg, _ in pickletools.genops(zf.read("0/data.pkl")) if op.name == "GLOBAL"}
        w_enc = np.frombuffer(zf.read("0/data/0"), np.float32)
        for info in zf.infolist():
            if "/data/" in info.filename:  # data aligned as torch aligns it (mmap loading)
                assert (info.header_offset + 30 + len(info.filename) + len(info.extra)) % 64 == 0
    want = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch FloatStorage"}
    assert globals_ == (want | {"torch IntStorage"} if act == "batchtopk" else want)
    np.testing.assert_array_equal(w_enc, np.asarray(cc.params["W_enc"], np.float32).ravel())
    state = torch_zip.load_state_dict(out / "0.pt")
    assert {k: v.shape for k, v in state.items()} == {
        **{k: _shape(s, 2) for k, s in PAPER_TENSORS.items()}, **({"k": (), "threshold": ()} if act == "batchtopk"
                                                                   else {})}


def test_saelens_topk_with_unequal_norms_is_refused_or_exported_with_scaled_codes(tmp_path):
    cc = make_crosscoder(tmp_path, 1, "topk")
    with pytest.raises(InterchangeError, match="decoder norms differ.*scaled_codes=True"):
        export_to(cc, "saelens", tmp_path / "refused")
    out = tmp_path / "scaled"
    export_to(cc, "saelens", out, scaled_codes=True)
    x = raw_inputs(cc)
    f, xhat = np.asarray(cc.encode(x)), np.asarray(cc.reconstruct(x))
    raw_norm_F = np.linalg.norm(np.asarray(cc.folded()["W_dec"], np.float64)[:, 0], axis=-1)
    ref_f, ref_xhat = saelens_reference(out, x.astype(np.float64))
    np.testing.assert_array_equal(ref_f > 0, f > 0)  # the same latents
    close(ref_f, f * raw_norm_F, "codes scaled by the raw-space decoder norms")
    close(ref_xhat, xhat)
    assert "decoder norm" in json.loads((out / "cfg.json").read_text())["metadata"]["crosscoder_jax"]["codes"]
    # a batchtopk SAE without its threshold keeps each row's top k: the same rule, exported as topk
    nothr = make_crosscoder(tmp_path, 1, "batchtopk", theta=None)
    with pytest.raises(InterchangeError, match="'batchtopk' SAE's codes"):
        export_to(nothr, "saelens", tmp_path / "nothr")
    export_to(nothr, "saelens", tmp_path / "nothr", scaled_codes=True)
    assert json.loads((tmp_path / "nothr" / "cfg.json").read_text())["architecture"] == "topk"
    np.testing.assert_array_equal(saelens_reference(tmp_path / "nothr", x.astype(np.float64))[0] > 0,
                                  np.asarray(nothr.encode(x)) > 0)


def test_refusals_name_the_problem_and_the_fix(tmp_path):
    cc2 = make_crosscoder(tmp_path, 2, "batchtopk")
    with pytest.raises(InterchangeError, match=r"plain SAE \(one checkpoint\).*C=2.*'dictionary_learning' or 'paper'"):
        export_to(cc2, "saelens", tmp_path / "a")
    for fmt in ("dictionary_learning", "paper"):
        for act in ("topk", "jumprelu"):
            with pytest.raises(InterchangeError, match=f"cannot hold a '{act}' crosscoder"):
                export_to(make_crosscoder(tmp_path, 2, act), fmt, tmp_path / "b")
        with pytest.raises(InterchangeError, match="no inference threshold"):
            export_to(make_crosscoder(tmp_path, 2, "batchtopk", theta=None), fmt, tmp_path / "c")
    with pytest.raises(ValueError, match="unknown format 'sae_lens'; known: dictionary_learning, paper, saelens"):
        export_to(cc2, "sae_lens", tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="nothing at"):
        import_from(tmp_path / "missing", "paper")
    with pytest.raises(FileNotFoundError, match="no crosscoder.safetensors in"):
        export_run(tmp_path / "no_run", "paper")


def test_imports_of_files_the_libraries_write(tmp_path):
    """Files in the libraries' own conventions that our exports never produce."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 2, D)) * 2.0
    # SAELens topk with rescale_acts_by_decoder_norm and apply_b_dec_to_input (its training defaults)
    sae = tmp_path / "sae_topk"
    sae.mkdir()
    W_dec = rng.normal(size=(F, D)) * rng.uniform(0.1, 1.0, size=(F, 1))
    save_file({"W_enc": rng.normal(size=(D, F)).astype(np.float32), "b_enc": rng.normal(size=F).astype(np.float32),
               "W_dec": W_dec.astype(np.float32), "b_dec": rng.normal(size=D).astype(np.float32)},
              str(sae / "sae_weights.safetensors"))
    cfg = {"d_in": D, "d_sae": F, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", "metadata": {"sae_lens_version": "6.54.12"},
           "k": 5, "rescale_acts_by_decoder_norm": True, "architecture": "topk"}
    (sae / "cfg.json").write_text(json.dumps(cfg))
    f_ref, xhat_ref = saelens_reference(sae, x[:, :1])
    cc = import_from(sae, "saelens")
    assert cc.spec.activation == "topk" and cc.spec.k == 5
    close(cc.encode(x[:, :1]), f_ref)
    close(cc.reconstruct(x[:, :1]), xhat_ref)
    cfg["rescale_acts_by_decoder_norm"] = False  # ranks unweighted with unequal norms: no crosscoder does that
    (sae / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InterchangeError, match="ranks hidden_pre unweighted"):
        import_from(sae, "saelens")
    # dictionary_learning BatchTopKCrossCoder with a nonzero activation mean (its normaliser)
    base = make_crosscoder(tmp_path, 2, "batchtopk")
    dl = tmp_path / "dl"
    export_to(base, "dictionary_learning", dl)
    t = load_file(str(dl / "model.safetensors"))
    t["activation_mean"] = rng.normal(size=(2, D)).astype(np.float32)
    save_file(t, str(dl / "model.safetensors"))
    f_ref, xhat_ref = dictionary_learning_reference(dl, x)
    assert 0.05 < np.mean(f_ref > 0) < 0.8
    cc = import_from(dl, "dictionary_learning")
    close(cc.encode(x), f_ref)
    close(cc.reconstruct(x), xhat_ref)
    # the fork's trainer output: a torch .pt state dict
    torch_zip.save_state_dict(tmp_path / "model_final.pt", t)
    close(import_from(tmp_path / "model_final.pt", "dictionary_learning").encode(x), f_ref)
    # the paper's BatchTopK before its threshold: eval-mode codes are ReLU codes, imported as l1
    paper = tmp_path / "paper"
    export_to(base, "paper", paper)
    state = torch_zip.load_state_dict(paper / "0.pt")
    state["threshold"] = np.array(-1.0, np.float32)
    torch_zip.save_state_dict(paper / "3.pt", state)  # their loader takes the largest <n>
    (paper / "3_cfg.json").write_text((paper / "0_cfg.json").read_text())
    cc = import_from(paper, "paper")
    assert cc.spec.activation == "l1" and "threshold -1" in cc.meta["import_note"]
    relu_codes = np.maximum(np.einsum("bcd,cdf->bf", x * np.asarray(SCALES[:2])[None, :, None],
                                      state["W_enc"].astype(np.float64)) + state["b_enc"], 0.0)
    close(cc.encode(x), relu_codes)


def test_torch_zip_round_trip_of_every_dtype(tmp_path):
    from ml_dtypes import bfloat16
    arrays = {"f32": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "scalar_i32": np.array(7, np.int32),
              "i64": np.array([1, -2], np.int64), "f16": np.arange(3).astype(np.float16),
              "bf16": np.arange(3).astype(bfloat16), "bool": np.array([True, False]),
              "transposed": np.arange(6, dtype=np.float64).reshape(2, 3).T}
    torch_zip.save_state_dict(tmp_path / "x.pt", arrays)
    back = torch_zip.load_state_dict(tmp_path / "x.pt")
    assert list(back) == list(arrays)
    for k, a in arrays.items():
        assert back[k].dtype == a.dtype and back[k].shape == a.shape
        np.testing.assert_array_equal(back[k].astype(np.float64), a.astype(np.float64))
    (tmp_path / "evil.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a torch zip file"):
        torch_zip.load_state_dict(tmp_path / "evil.pt")


def test_export_run_import_run_and_the_launch_script(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cc = make_crosscoder(tmp_path, 2, "batchtopk")
    (run / "crosscoder.safetensors").write_bytes(cc_path(tmp_path, 2, "batchtopk", False, 0.8).read_bytes())
    (run / "config.json").write_text(json.dumps({"lr": 5e-5, "batch_size": 4096, "steps": 100, "seed": 7, "b1": 0.9,
                                                 "b2": 0.999, "sparsity_warmup_frac": 0.05, "workdir": str(run)}))
    files = export_run(run, "paper")
    assert files[0].parent == run / "export_paper"
    cfg = json.loads(files[1].read_text())
    assert (cfg["lr"], cfg["num_tokens"], cfg["seed"], cfg["wandb_name"]) == (5e-5, 409600, 7, "run")
    # lr 0 in config.json is the default rule; the paper's cfg gets the lr the run trained with
    (run / "config.json").write_text(json.dumps({"lr": 0.0, "batch_size": 4096, "steps": 100}))
    F = cc.spec.dict_size
    again = json.loads(export_run(run, "paper", tmp_path / "lr0")[1].read_text())
    assert again["lr"] == pytest.approx(2e-4 / (F / 2 ** 14) ** 0.5) and again["lr"] > 0
    imported = import_run(run / "export_paper", "paper", tmp_path / "run2")
    x = raw_inputs(cc)
    close(load_crosscoder(imported).encode(x), cc.encode(x))
    with pytest.raises(FileExistsError, match="exists"):
        import_run(run / "export_paper", "paper", tmp_path / "run2")
    cmd = [sys.executable, "-m", "launch.export", f"--config.workdir={run}", "--config.format=dictionary_learning",
           f"--config.out={tmp_path / 'cli'}"]
    r = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "model.safetensors" in r.stdout and (tmp_path / "cli" / "config.json").exists()
    close(dictionary_learning_reference(tmp_path / "cli", x)[0], cc.encode(x))
    bad = subprocess.run(cmd[:-2] + ["--config.format=sae_lens"], env=subprocess_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "unknown format 'sae_lens'" in bad.stderr and "Traceback" not in bad.stderr


# --- Through the libraries themselves -----------------------------------------------------------

PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
_PEER_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np, torch
cases = json.loads(sys.argv[1])
fork = sys.argv[2]
if fork:
    sys.path.insert(0, fork)
for c in cases:
    d = Path(c["dir"]); x = torch.tensor(np.load(d / "x.npy"))
    with torch.no_grad():
        if c["fmt"] == "saelens":
            from sae_lens import SAE
            sae = SAE.load_from_disk(str(d))
            f = sae.encode(x[:, 0]); xhat = sae.decode(f)[:, None]
            kind = type(sae).__name__
        elif c["fmt"] == "paper":  # torch.load (weights_only) + the paper's eval-mode encode, crosscoder.py
            sd = torch.load(d / "0.pt"); cfg = json.loads((d / "0_cfg.json").read_text())
            s = torch.tensor(cfg["estimated_act_norm_list"])[None, :, None]
            post = torch.relu(torch.einsum("bnd,ndh->bh", x * s, sd["W_enc"]) + sd["b_enc"])
            f = post * (post * sd["W_dec"].norm(dim=2).sum(dim=1)[None] > sd["threshold"]) if "k" in sd else post
            xhat = (torch.einsum("bh,hnd->bnd", f, sd["W_dec"]) + sd["b_dec"]) / s
            kind = "torch.load:" + ",".join(sd)
        else:
            from dictionary_learning.dictionary import BatchTopKCrossCoder, CrossCoder
            cls = BatchTopKCrossCoder if c["act"] == "batchtopk" else CrossCoder
            m = cls.from_pretrained(str(d), from_hub=True); m.eval()
            f = m.encode(x); xhat = m.decode(f); kind = type(m).__name__
    np.save(d / "f_lib.npy", f.numpy()); np.save(d / "xhat_lib.npy", xhat.numpy())
    print("LOADED", c["fmt"], c["act"], kind)
"""


def _through_peers(tmp_path: Path, cases, fork: str = "") -> list[str]:
    """Exports each case, encodes and decodes it in .venv-peers through the library (created as
    bench_vs_peers.py --setup does if missing), checks the results against ours; returns what loaded them."""
    if not PEERS_PY.exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_vs_peers.py"), "--setup"], check=True,
                       cwd=ROOT)
    jobs, expected = [], {}
    for fmt, C, act in cases:
        cc, out, _ = case(tmp_path, fmt, C, act)
        x = raw_inputs(cc, n=128, seed=5)
        np.save(out / "x.npy", x)
        expected[out] = (np.asarray(cc.encode(x)), np.asarray(cc.reconstruct(x)))
        jobs.append({"dir": str(out), "fmt": fmt, "act": act.split(":")[0]})
    r = subprocess.run([str(PEERS_PY), "-c", _PEER_SCRIPT, json.dumps(jobs), fork], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr[-3000:]
    for out, (f, xhat) in expected.items():
        close(np.load(out / "f_lib.npy"), f, f"{out.name}: the library's codes")
        close(np.load(out / "xhat_lib.npy"), xhat, f"{out.name}: the library's reconstruction")
    return [line[len("LOADED "):] for line in r.stdout.splitlines() if line.startswith("LOADED ")]


@pytest.mark.slow
def test_saelens_and_paper_exports_load_through_sae_lens_and_torch(tmp_path):
    """SAELens's SAE.load_from_disk, and torch.load (weights_only) of the paper's .pt, in .venv-peers."""
    kinds = _through_peers(tmp_path, [c for c in SUPPORTED if c[0] != "dictionary_learning"])
    assert {"saelens l1 StandardSAE", "saelens jumprelu JumpReLUSAE", "saelens batchtopk JumpReLUSAE",
            "saelens topk TopKSAE", "saelens batchtopk TopKSAE", "paper l1 torch.load:W_enc,W_dec,b_enc,b_dec",
            "paper batchtopk torch.load:W_enc,W_dec,b_enc,b_dec,k,threshold"} == set(kinds)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CROSSCODER_JAX_DL_FORK"),
                    reason="the dictionary_learning fork is not on PyPI (the package of that name there has no "
                           "crosscoders): set CROSSCODER_JAX_DL_FORK to a checkout of "
                           "science-of-finetuning/dictionary_learning")
def test_dictionary_learning_exports_load_through_the_fork(tmp_path):
    """`CrossCoder` / `BatchTopKCrossCoder.from_pretrained(DIR, from_hub=True)` from a checkout of the fork."""
    kinds = _through_peers(tmp_path, [c for c in SUPPORTED if c[0] == "dictionary_learning"],
                           os.environ["CROSSCODER_JAX_DL_FORK"])
    assert set(kinds) == {"dictionary_learning l1 CrossCoder", "dictionary_learning batchtopk BatchTopKCrossCoder"}
