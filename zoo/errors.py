"""Errors that name the problem and the fix. The CLI prints these as one message instead of a traceback."""


class UserError(Exception):
    """Base of errors caused by input (data, config, checkpoint) rather than by a bug."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A data file or checkpoint that was asked for does not exist."""


class DataFileError(UserError, ValueError):
    """A data file exists but its content is not what the format requires."""


class ShapeMismatchError(UserError, ValueError):
    """Data and model disagree on image shape or neuron count."""
