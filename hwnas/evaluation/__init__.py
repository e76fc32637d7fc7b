"""Final evaluation: the simulator judges the chosen networks and the baseline (on a measured
target, ``measured_by``, a timing in ONNX Runtime judges latency).

Pure functions; the ``evaluate`` stage reads the files and writes the results.

- ``metrics``: the judge's figures of named networks (and the estimator's error on each),
  standard errors and ``metrics.json`` with the targets.
- ``ablation``: the article's table (fused-IBN search x depth-multiplier search), derived
  from one search's candidates by restriction.
- ``plots``: ``pareto.png``.
- ``report``: ``report.md``.
"""
from hwnas.errors import UserError


class EvaluateError(UserError):
    """Unusable input to the evaluation; the message names the file or key."""
