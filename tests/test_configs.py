"""The paper configs load for every stage with the paper's hyperparameters; the demo's checkpoint choice."""

import pytest

from configs import bloom_1b1, olmo_1b, pythia_1b
from crosscoder_jax.data.harvest import parse_checkpoints
from crosscoder_jax.pipeline import choose_checkpoints, choose_series
from crosscoder_jax.training.runconfig import spec_from_config


@pytest.mark.parametrize("module,layer,n", [(pythia_1b, 8, 3), (olmo_1b, 8, 3), (bloom_1b1, 12, 3)])
def test_paper_configs(module, layer, n):
    h = module.get_config("harvest")
    assert h.layer == layer and len(parse_checkpoints(h.checkpoints, h.model)) == n
    assert h.context_len == 1024 and h.drop_bos
    l1 = spec_from_config(module.get_config("train"), n, 2048)
    assert (l1.activation, l1.dict_size, l1.sparsity_coeff, l1.sparsity_warmup_steps) == ("l1", 16384, 2.0, 4883)
    btk = module.get_config("train_batchtopk")
    assert (btk.k, btk.k_start, btk.k_anneal_steps, btk.lr, btk.batch_size, btk.steps) == (200, 1000, 5000, 5e-5,
                                                                                           4096, 97_656)
    assert spec_from_config(btk, n, 2048).dec_init_norm_resolved == 1.0  # the paper's, not our default 1/sqrt(3 C)
    assert l1.dec_init_norm_resolved == 0.08
    assert module.get_config("attribute").steps == 10
    with pytest.raises(ValueError, match="unknown stage"):
        module.get_config("nope")


def test_choose_checkpoints_straddles_the_jump():
    names = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"]
    acc = [0.5, 0.3, 0.02, 0.03, 0.1, 0.7, 1.0, 1.0]
    assert choose_checkpoints(names, acc) == ["s3", "s6", "s7"]
    assert choose_checkpoints(["a", "b"], [0.2, 0.9]) == ["a", "b"]


def test_choose_series_keeps_the_ends_and_the_jump_and_spreads_the_rest():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2000]
    names = [f"step{s}" for s in steps]
    acc = [0.5, 0.5, 0.4, 0.3, 0.2, 0.2, 0.25, 0.3, 0.9, 0.95, 0.97, 0.98, 0.98]
    got = choose_series(names, steps, acc, n=8)
    assert len(got) == 8 and got == sorted(got, key=names.index)
    # first, last, both sides of the rise (64 -> 128), and the triplet rule's dip end (32) and reached (128)
    assert {"step0", "step2000", "step64", "step128", "step32"} <= set(got)
    # the rest fill the widest gaps in log(step + 1): step 512 splits 128..2000, steps 1 and 4 split 0..32
    assert {"step512", "step1", "step4"} <= set(got)
    assert choose_series(names, steps, acc, n=3) == ["step0", "step128", "step2000"]
    assert choose_series(names[:5], steps[:5], acc[:5], n=8) == names[:5]
