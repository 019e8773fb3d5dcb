"""Stage: one self-contained HTML report of a run, and its figures.

Takes: the outputs of the earlier stages on disk (task curves, store, crosscoder, eval.json,
attribution CSV/JSON). Gives: `report.html`, PNG figures and `report_summary.json`
(`build.write_report`; `figures` draws, `render` writes the HTML).
"""

from crosscoder_jax.report.build import write_report

__all__ = ["write_report"]
