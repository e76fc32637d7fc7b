"""The latency/memory estimator: microbenchmarks, per-kernel LightGBM models, network estimates.

``Estimator.load(dir, spec).estimate(archs)`` predicts from saved LightGBM text files and
their manifest alone; it never imports ``hardware.simulator``.
"""
from hwnas.estimator.model import Estimator, EstimatorError, LightGBMConfig

__all__ = ["Estimator", "EstimatorError", "LightGBMConfig"]
