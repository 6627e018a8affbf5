"""Errors a user can cause and fix.

Every mistake a user can make (a missing file, a bad flag, an unknown classifier) raises a
subclass of :class:`JaxfoolError` whose message is one line naming the problem. The CLIs print
that line and exit with status 2 instead of showing a traceback from deep inside JAX.
"""


from jaxfool.config import ConfigError, JaxfoolError

__all__ = ["JaxfoolError", "ConfigError", "DataError", "ClassifierError", "CheckpointError", "OutputError", "DeviceMemoryError"]


class DataError(JaxfoolError):
    """A data set is missing, truncated or malformed."""


class ClassifierError(JaxfoolError):
    """A classifier is unknown, or its checkpoint or outputs are malformed."""


class CheckpointError(JaxfoolError):
    """A run directory cannot be resumed."""


class OutputError(JaxfoolError):
    """The output directory cannot be written (read-only, no permission, disk full)."""


class DeviceMemoryError(JaxfoolError):
    """The accelerator ran out of memory for the run's batch."""
