"""Errors that name the problem and the fix. The CLI prints these as one message instead of a traceback."""


class UserError(Exception):
    """Base of errors caused by input (data, config, checkpoint) rather than by a bug."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A data file or checkpoint that was asked for does not exist."""


class DataFileError(UserError, ValueError):
    """A data file exists but its content is not what the format requires."""


class ShapeMismatchError(UserError, ValueError):
    """Data and model disagree on image shape or neuron count."""


class UnknownModelError(UserError, KeyError):
    """A zoo name that no entry has; the message names the closest ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsError(UserError, RuntimeError):
    """Zoo weights that could not be found, fetched or verified; the message says what was tried and what will work."""


class RegistryError(UserError, ValueError):
    """An entry of the zoo's registry that is malformed; the message names the entry and the field."""
