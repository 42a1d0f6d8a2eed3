"""The errors of the metrics: bad inputs, and weights that are not where they should be (defined with
vidiff's other errors)."""

from vidiff.errors import MetricsError, MissingWeightsError

__all__ = ["MetricsError", "MissingWeightsError"]
