"""Errors users should read: each names the parameter or file at fault and what was expected."""


class DifftrainError(Exception):
    """Base class: stages print these as one clear message instead of a traceback."""


class ParamsError(DifftrainError):
    """A parameter in params.yaml is unknown, of the wrong type or out of range."""


class DataError(DifftrainError):
    """A data source, prepared split or pair index is missing, malformed or inconsistent."""


class CheckpointError(DifftrainError):
    """A model file is missing, corrupt, or was built from other parameters."""


class DivergenceError(DifftrainError):
    """Training produced a non-finite loss."""
