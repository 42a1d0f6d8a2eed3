"""The one error type the data pipeline raises for bad input (defined with vidiff's other errors)."""

from vidiff.errors import DataError

__all__ = ["DataError"]
