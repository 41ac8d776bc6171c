"""Errors raised by the data pipelines."""


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not where we looked; the message says where and how to get it."""


class CorruptImageError(ValueError):
    """An image file in a folder data set cannot be decoded; the message names it."""
