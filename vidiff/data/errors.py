"""The one error type the data pipeline raises for bad input."""

from ..errors import VidiffError


class DataError(VidiffError, ValueError):
    """Bad or unusable input data.

    The message names the file or folder at fault, what is wrong with it, and what to do about it.
    """
