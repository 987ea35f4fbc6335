"""Errors with messages that name the offending thing and the fix."""


class AttneditError(Exception):
    """Base class: every error the harness raises on bad input or missing resources."""


class WeightsNotFoundError(AttneditError, FileNotFoundError):
    """Pretrained weights are not on disk and cannot be downloaded (offline)."""


class DataError(AttneditError, ValueError):
    """A dataset file or entry is missing or malformed."""


class ConfigError(AttneditError, ValueError):
    """A configuration value is unknown or out of range."""


class NonFiniteOutputError(AttneditError, FloatingPointError):
    """A model or metric produced NaN/inf where a finite value is required."""
