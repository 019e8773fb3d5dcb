"""Loading and saving Hugging Face checkpoints, offline.

`source` is a local directory (config.json + weights) or a hub id ("EleutherAI/pythia-1b") found in
the local Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else ~/.cache/huggingface/hub;
layout models--ORG--NAME/refs/REV -> snapshots/HASH/). Nothing is downloaded. Weights: model.safetensors,
sharded safetensors (model.safetensors.index.json) or pytorch_model.bin (needs torch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from crosscoder_jax.models.core import (LM, CheckpointError, family_module, params_from_state_dict,
                                        state_dict_from_params)

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


# --------------------------------------------------------------------------------------------
# Resolving a source to a local directory
# --------------------------------------------------------------------------------------------

def hub_cache_dir() -> Path:
    """The hub cache directory, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _fetch_hint(repo_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (f"on a machine with internet run `huggingface-cli download {repo_id}{rev}` (or `hf download`) "
            f"and copy the cache (or set HF_HUB_CACHE to it)")


def resolve(source: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory holding config.json for `source` at `revision` (a branch, tag or commit)."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "refs").is_dir() and (path / "snapshots").is_dir():
        return _snapshot(path, path.name.removeprefix("models--").replace("--", "/"), revision)
    if path.is_dir():
        if revision is None:
            return path
        if (path / revision).is_dir():
            return path / revision
        raise CheckpointError(f"revision {revision!r} was given for the local directory {path}, which has no "
                              f"subdirectory of that name; pass the checkpoint directory itself")
    repo_id = str(source)
    if repo_id.startswith(("/", ".", "~")) or repo_id.count("/") > 1:  # a path, not a hub id
        raise CheckpointError(f"checkpoint directory {path} does not exist; check the path (a local "
                              "directory with config.json and the weights, or a hub id ORG/NAME in the local cache)")
    if repo_id.count("/") != 1:
        raise CheckpointError(f"{repo_id!r} is neither a local directory nor a hub id of the form ORG/NAME")
    cache = hub_cache_dir()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        raise CheckpointError(f"{repo_id} is not in the local Hugging Face cache ({cache}); "
                              f"{_fetch_hint(repo_id, revision)}")
    return _snapshot(repo_dir, repo_id, revision)


def _snapshot(repo_dir: Path, repo_id: str, revision: str | None) -> Path:
    """The snapshot directory of a cached repo at a branch/tag name or commit hash (default main)."""
    rev = revision or "main"
    ref = repo_dir / "refs" / rev
    if ref.is_file():
        commit = ref.read_text().strip()
    elif (repo_dir / "snapshots" / rev).is_dir():
        commit = rev
    else:
        refs = sorted(p.relative_to(repo_dir / "refs").as_posix() for p in (repo_dir / "refs").rglob("*")
                      if p.is_file()) if (repo_dir / "refs").is_dir() else []
        raise CheckpointError(f"revision {rev!r} of {repo_id} is not in the local cache ({repo_dir}); cached "
                              f"revisions: {refs or 'none'}; {_fetch_hint(repo_id, rev)}")
    snap = repo_dir / "snapshots" / commit
    if not snap.is_dir():
        raise CheckpointError(f"{repo_id}@{rev} points to commit {commit} whose snapshot is missing from "
                              f"{repo_dir}; {_fetch_hint(repo_id, rev)}")
    return snap


# --------------------------------------------------------------------------------------------
# Weight files
# --------------------------------------------------------------------------------------------

def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-mapped arrays of a .safetensors file (bfloat16 through ml_dtypes)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        out[name] = data[start:end].view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Writes a .safetensors file (any dtype in the safetensors table, bfloat16 included)."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset, arrays = 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        header[name] = {"dtype": _ST_NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for a in arrays:
            f.write(a.tobytes())
    os.replace(tmp, path)


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path} is a PyTorch pickle and torch is not installed; install torch (CPU is "
                              f"enough) or convert the checkpoint to safetensors") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in sd.items()
            if isinstance(v, torch.Tensor)}


def read_state_dict(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory, from whichever weight format it holds."""
    if (directory / "model.safetensors").is_file():
        return read_safetensors(directory / "model.safetensors")
    for index_name, reader in (("model.safetensors.index.json", read_safetensors),
                               ("pytorch_model.bin.index.json", _read_torch_bin)):
        if (directory / index_name).is_file():
            weight_map = json.loads((directory / index_name).read_text())["weight_map"]
            sd: dict[str, np.ndarray] = {}
            for shard in sorted(set(weight_map.values())):
                if not (directory / shard).is_file():
                    raise CheckpointError(f"{directory / index_name} names shard {shard}, which is missing; "
                                          f"download the complete checkpoint")
                sd.update(reader(directory / shard))
            return sd
    if (directory / "pytorch_model.bin").is_file():
        return _read_torch_bin(directory / "pytorch_model.bin")
    present = sorted(p.name for p in directory.iterdir())
    raise CheckpointError(f"no weights in {directory}: expected model.safetensors, model.safetensors.index.json "
                          f"(sharded) or pytorch_model.bin; found {present}. Download the full checkpoint, "
                          f"not just its config")


def read_config(directory: Path) -> dict[str, Any]:
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"no config.json in {directory}; a Hugging Face checkpoint directory needs one")
    return json.loads((directory / "config.json").read_text())


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------

def _family_config(directory: Path) -> tuple[str, Any]:
    hf_cfg = read_config(directory)
    family = hf_cfg.get("model_type")
    if family is None:
        raise CheckpointError(f"{directory / 'config.json'} has no model_type")
    return family, family_module(family).config_from_hf(hf_cfg)


def load_config(source: str | os.PathLike, revision: str | None = None) -> Any:
    """The family Config (`n_layers`, `d_model`, ...) of a checkpoint, without reading its weights."""
    return _family_config(resolve(source, revision))[1]


def load(source: str | os.PathLike, revision: str | None = None, dtype=jnp.float32) -> LM:
    """An LM from a local checkpoint directory or a cached hub id at `revision` (offline)."""
    directory = resolve(source, revision)
    family, cfg = _family_config(directory)
    sd = read_state_dict(directory)
    return LM(params=params_from_state_dict(family, cfg, sd, dtype), family=family, config=cfg)


def load_tokenizer(source: str | os.PathLike, revision: str | None = None):
    """transformers.AutoTokenizer from the same resolved local directory."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(resolve(source, revision)), local_files_only=True)


def save_pretrained(lm: LM, directory: str | os.PathLike, tokenizer=None) -> Path:
    """Writes config.json + model.safetensors in the HF layout (and the tokenizer's files if given)
    so that transformers' `AutoModelForCausalLM.from_pretrained(directory)` loads the same model."""
    fam = family_module(lm.family)
    if not hasattr(fam, "config_to_hf"):
        raise NotImplementedError(f"saving is not implemented for the {lm.family} family (no config_to_hf)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = state_dict_from_params(lm)
    dtype = next(iter(sd.values())).dtype
    hf_cfg = dict(fam.config_to_hf(lm.config))
    hf_cfg["dtype"] = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
                       np.dtype(ml_dtypes.bfloat16): "bfloat16"}.get(np.dtype(dtype), "float32")
    write_safetensors(directory / "model.safetensors", sd)
    (directory / "config.json").write_text(json.dumps(hf_cfg, indent=2))
    if tokenizer is not None:
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(directory))
        else:
            tokenizer.save(str(directory / "tokenizer.json"))
    return directory
