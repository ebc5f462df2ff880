"""tsekit: target speaker extraction toolkit."""

import sys

__version__ = "0.1.0"


def warn(message: str) -> None:
    """Tell the user about something odd that does not stop the command: one line on stderr, as errors are.

    Through tqdm where it is loaded, so that a running progress bar (infer's) is redrawn below the line instead of
    being broken by it."""
    line = f"tsekit: warning: {message}"
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


class TsekitError(Exception):
    """An error the user can fix (bad input, missing file); the CLI prints it on one line and exits with exit_code."""

    exit_code = 1
