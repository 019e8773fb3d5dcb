"""matmul_dtype "auto": bf16 on accelerators, on CPU by a cached probe; explicit choices pass through."""

import json

import pytest

from crosscoder_jax.runtime import matmul_choice


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(matmul_choice, "_MEMO", {})
    return tmp_path


def test_explicit_choices_pass_through_and_bad_ones_are_named():
    assert matmul_choice.choose("float32") == ("float32", "set in the config")
    assert matmul_choice.choose("bfloat16")[0] == "bfloat16"
    with pytest.raises(ValueError, match="matmul_dtype='fp16': choose one of auto, float32, bfloat16"):
        matmul_choice.choose("fp16")


@pytest.mark.parametrize("bf16, want", [(80.0, "float32"), (105.0, "float32"), (400.0, "bfloat16")])
def test_auto_on_cpu_follows_the_probe_with_a_margin(fresh, monkeypatch, bf16, want):
    calls = []
    monkeypatch.setattr(matmul_choice, "probe", lambda: calls.append(1) or {"float32": 100.0, "bfloat16": bf16})
    dtype, why = matmul_choice.choose("auto")
    assert dtype == want and "CPU probe 100 GFLOP/s float32" in why
    cached = json.loads(matmul_choice.cache_path().read_text())
    assert cached[matmul_choice.machine_key()] == {"float32": 100.0, "bfloat16": bf16}
    matmul_choice._MEMO.clear()  # a new process: reads the cache instead of probing again
    assert matmul_choice.choose("auto")[0] == want and len(calls) == 1


def test_auto_on_an_accelerator_is_bf16_without_probing(fresh, monkeypatch):
    monkeypatch.setattr(matmul_choice.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(matmul_choice, "probe", lambda: pytest.fail("probed on an accelerator"))
    assert matmul_choice.choose("auto") == ("bfloat16", "auto: gpu backend (bf16 matrix units)")


def test_the_probe_measures_both_dtypes():
    rates = matmul_choice.probe(n=256, reps=2)
    assert set(rates) == {"float32", "bfloat16"} and all(r > 0 for r in rates.values())
