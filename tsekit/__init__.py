"""tsekit: target speaker extraction toolkit."""

import sys

__version__ = "0.1.0"


def __getattr__(name: str):
    """``tsekit.load_model`` (``tsekit.infer.model``), imported on first use: ``import tsekit`` stays light (the CLI
    and the plumbing modules import this package, and must not pull in torch)."""
    if name == "load_model":
        from tsekit.infer.model import load_model

        return load_model
    raise AttributeError(f"module 'tsekit' has no attribute {name!r}")


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


def register_class(table: dict, name: str, cls: type, bases: tuple[type, ...], kind: str) -> type:
    """Add ``cls`` to ``table`` under ``name`` (its ``registry_name``): the one mechanism of the system and codec
    registries' class decorators. A class of another kind, or a name taken twice, is a programming error."""
    if not issubclass(cls, bases):
        raise TypeError(f"{cls.__name__} must subclass {' or '.join(b.__name__ for b in bases)} to be registered")
    if name in table:
        raise ValueError(f"{kind} name {name!r} registered twice")
    cls.registry_name = name
    table[name] = cls
    return cls
