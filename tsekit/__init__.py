"""tsekit: target speaker extraction toolkit."""

__version__ = "0.1.0"


class TsekitError(Exception):
    """An error the user can fix (bad input, missing file); the CLI prints it on one line and exits with exit_code."""

    exit_code = 1
