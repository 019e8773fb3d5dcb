"""Moving trained crosscoders between this library and the field's: export and import.

Formats (one module each; the layouts, their sources and the mappings are in the modules):
  dictionary_learning  science-of-finetuning's dictionary_learning fork: `CrossCoder` (l1) and
                       `BatchTopKCrossCoder` (batchtopk), `model.safetensors` + `config.json`
                       for `from_pretrained(DIR, from_hub=True)`; imports its trainers' .pt too.
  saelens              SAELens 6 `cfg.json` + `sae_weights.safetensors` for a plain SAE (C = 1):
                       standard (l1), jumprelu (jumprelu, batchtopk), topk (topk).
  paper                the paper's code: `0.pt` + `0_cfg.json` (normalised-space weights, the
                       per-checkpoint scales in `estimated_act_norm_list`); l1 and batchtopk.

Every export gives the target library's own encode our codes (numerically: checked against a
float64 reimplementation of each library's encode in tests/crosscoder/test_interchange.py), or
refuses with the reason: a format without the activation, C > 1 for SAELens, a batchtopk crosscoder
whose threshold was never estimated where the format has no per-token top-k, and a SAELens topk
export with unequal decoder norms unless `scaled_codes=True` (see `saelens`). Imports return a
`Crosscoder` whose `encode` gives that library's codes.

Entry points: `export_to(crosscoder, format, out_dir)`, `import_from(path, format)`, and for a
training run's workdir `export_run` / `import_run` (what `python -m launch.export` calls).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from crosscoder_jax.crosscoder import Crosscoder, load_crosscoder
from crosscoder_jax.crosscoder.interchange import dictionary_learning, paper, saelens
from crosscoder_jax.crosscoder.interchange.base import ExportOptions, InterchangeError, build

FORMATS = {"dictionary_learning": dictionary_learning, "saelens": saelens, "paper": paper}
CROSSCODER_FILE = "crosscoder.safetensors"


def _module(fmt: str):
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(FORMATS))}") from None


def export_to(crosscoder: Crosscoder, format: str, out_dir: str | os.PathLike, *, scaled_codes: bool = False,
              run_config: Mapping[str, Any] | None = None, device: str = "cuda:0") -> list[Path]:
    """Writes `crosscoder` into `out_dir` (created) in `format`; returns the files written.

    scaled_codes: saelens topk with unequal decoder norms only (see `saelens`).
    run_config: the training run's config.json, for the paper cfg's training fields.
    device: the paper cfg's `device`.
    Raises InterchangeError when the format cannot hold this crosscoder exactly, naming why.
    """
    module = _module(format)
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return module.export(crosscoder, out, ExportOptions(scaled_codes, run_config, device))
    except BaseException:
        if created and not any(out.iterdir()):  # a refused export leaves nothing behind
            out.rmdir()
        raise


def import_from(path: str | os.PathLike, format: str) -> Crosscoder:
    """Reads the crosscoder or SAE at `path` written in `format` (by us or by that library)."""
    module = _module(format)
    if not Path(path).exists():
        raise FileNotFoundError(f"nothing at {path} to import as {format!r}")
    return build(**module.load(Path(path)))


def export_run(workdir: str | os.PathLike, format: str, out_dir: str | os.PathLike | None = None, *,
               scaled_codes: bool = False, device: str = "cuda:0") -> list[Path]:
    """Exports `workdir/crosscoder.safetensors` (with the run's config.json where present) into
    `out_dir` (default `workdir/export_<format>`); returns the files written."""
    _module(format)
    workdir = Path(workdir)
    path = workdir / CROSSCODER_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {CROSSCODER_FILE} in {workdir}: a finished `python -m launch.train "
                                f"--config.workdir={workdir}` writes it (check --config.workdir)")
    run_config = json.loads((workdir / "config.json").read_text()) if (workdir / "config.json").exists() else None
    out = Path(out_dir) if out_dir else workdir / f"export_{format}"
    return export_to(load_crosscoder(path), format, out, scaled_codes=scaled_codes, run_config=run_config,
                     device=device)


def import_run(source: str | os.PathLike, format: str, workdir: str | os.PathLike) -> Path:
    """Imports `source` (in `format`) as `workdir/crosscoder.safetensors`, which evaluate and
    attribute read; refuses to replace one that is there. Returns its path."""
    module = _module(format)
    if not Path(source).exists():
        raise FileNotFoundError(f"nothing at {source} to import as {format!r}")
    workdir = Path(workdir)
    path = workdir / CROSSCODER_FILE
    if path.exists():
        raise FileExistsError(f"{path} exists: import into a new workdir (this would replace a crosscoder)")
    workdir.mkdir(parents=True, exist_ok=True)
    build(**module.load(Path(source)), path=path)
    return path


__all__ = ["FORMATS", "ExportOptions", "InterchangeError", "export_run", "export_to", "import_from", "import_run"]
