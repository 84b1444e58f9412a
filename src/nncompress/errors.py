"""The errors nncompress raises. Every message names the offending value and what is valid."""

from __future__ import annotations

import builtins


class NNCompressError(Exception):
    """Base class of every error raised on purpose by nncompress."""


class ValidationError(NNCompressError, ValueError):
    """An argument, option or configuration value is not valid."""


class ConfigError(ValidationError):
    """A training-time compression config (NNCF JSON) is not valid; the message names the key path."""


class UnsupportedModelError(NNCompressError, TypeError):
    """The model's type or structure is not one nncompress can compress."""


class UnsupportedBackendError(NNCompressError):
    """The model's backend is not installed, or the backend cannot do what was asked."""


class InvalidGroupSizeError(ValidationError):
    """A group size does not fit a weight's reduction dimension."""


class CalibrationError(NNCompressError):
    """The calibration dataset or its transform function did not give usable model inputs."""


class OneShotDatasetError(CalibrationError):
    """A one-shot data source (e.g. a generator object) would have to be read more than once."""


class GraphCaptureError(NNCompressError):
    """A model could not be captured into nncompress' graph."""


class AccuracyDropError(NNCompressError):
    """Accuracy control could not bring the metric drop within ``max_drop``.

    ``best_model`` holds the best model found, ``best_drop`` its drop and ``reverted`` the names of
    the operations kept in floating point.
    """

    def __init__(self, message: str, best_model=None, best_drop: float | None = None, reverted=()):
        super().__init__(message)
        self.best_model = best_model
        self.best_drop = best_drop
        self.reverted = list(reverted)


class InternalError(NNCompressError, RuntimeError):
    """nncompress reached a state it should never reach: a bug to report, not a wrong input."""


class ParameterNotSupportedError(ValidationError):
    """A parameter (or one of its values) exists in NNCF's API but is not supported for this call."""


class UnsupportedDatasetError(ValidationError):
    """The dataset object is of a kind nncompress cannot read."""


class UnknownDatasetError(ValidationError):
    """A dataset was named that nncompress does not know."""


class InvalidPathError(ValidationError):
    """A file or directory path does not exist or cannot be used."""


class InvalidCollectorTypeError(ValidationError):
    """A statistics collector (reducer or aggregator) type is not valid for the requested statistic."""


class InvalidQuantizerGroupError(NNCompressError):
    """A group of quantizers that must share parameters is inconsistent."""


class BufferFullError(NNCompressError):
    """A statistics buffer received more values than it was sized for."""


class StatisticsCacheError(NNCompressError):
    """Saved statistics (``statistics_path``) could not be read, written or do not match the model."""


class InstallationError(UnsupportedBackendError):
    """A package nncompress needs is missing or broken."""


class ModuleNotFoundError(InstallationError, builtins.ModuleNotFoundError):
    """A module nncompress needs could not be imported (also a ``builtins.ModuleNotFoundError``)."""


class UnsupportedVersionError(UnsupportedBackendError):
    """An installed package has a version nncompress does not support."""


def one_of(value, valid, what: str) -> ValidationError:
    """A ValidationError for ``value`` not among ``valid``."""
    names = ", ".join(repr(v) for v in valid)
    return ValidationError(f"{what} must be one of {names}; got {value!r}")
