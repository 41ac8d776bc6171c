"""Errors the LiteRT scripts turn into one clear line and a non-zero exit."""


class LiteRTError(Exception):
    """A user-facing problem (missing file, unknown model, bad flag value,
    failed verification). Scripts print its message, not a stack trace."""


class VerificationError(LiteRTError):
    """The converted model does not match the Keras model closely enough."""
