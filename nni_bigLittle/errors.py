"""The exceptions of nni_bigLittle: :class:`BigLittleError` is the base of every one the package raises.

Catch ``BigLittleError`` to handle any of them; the specific classes live next to the code that raises
them (``nni_bigLittle.nn.router.CalibrationError``, ``nni_bigLittle.deploy.export.ExportMismatch``, ...)
and keep their built-in bases (``ValueError``, ``RuntimeError``, ``FileNotFoundError``) so existing
``except ValueError`` code goes on working. The classes used across layers are defined here.

The two scripts that run on devices without the package (``deploy/run_bundle.py``,
``hw_predictors/bench_onnx.py``) import nothing of it: they take this base from ``sys.modules`` when
they are loaded as part of the package (it is imported with ``nni_bigLittle`` itself).
"""
from __future__ import annotations

__all__ = ['BigLittleError', 'ConfigError', 'UnknownNameError', 'DataError', 'DataNotFoundError', 'DataFormatError']


class BigLittleError(Exception):
    """Base of every exception nni_bigLittle raises."""


class ConfigError(BigLittleError, ValueError):
    """A config that cannot run; the message names the key and what is allowed."""


class UnknownNameError(BigLittleError, ValueError):
    """A name that no registry entry has (dataset, baseline, strategy, device); the message lists the valid ones."""


class DataError(BigLittleError):
    """A dataset cannot be found or read; the message says where it looked and what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data files are not where we looked; the message lists the places and the fix."""


class DataFormatError(DataError, ValueError):
    """The data files exist but are not what the loader expects (missing key, bad shape, corrupt)."""
