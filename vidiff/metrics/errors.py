"""The errors of the metrics: bad inputs, and weights that are not where they should be."""
from ..errors import VidiffError


class MetricsError(VidiffError, ValueError):
    """Inputs a metric cannot use: too few clips or frames, wrong shapes, an unknown metric."""


class MissingWeightsError(VidiffError, FileNotFoundError):
    """Network weights (I3D, InceptionV3) that are not installed or not at the given path."""
