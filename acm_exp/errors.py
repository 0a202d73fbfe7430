"""The exceptions users see: each prints as one line naming the bad value and what was expected."""


class UserError(Exception):
    """A failure the user can fix from its message alone; the CLI prints it as one line, no traceback."""


class ConfigError(UserError, ValueError):
    """Bad input (config value, model, checkpoint), detected before heavy work starts."""


class DataError(UserError):
    """Bad or unusable data found while working (a NaN statistic, a corrupt file read mid-run)."""


class RuntimeFailure(UserError):
    """The machine failed the work while it ran (a full disk), said with what it needed."""
