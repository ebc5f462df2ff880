"""``python -m tsekit`` = the ``tsekit`` command."""

from tsekit.cli import main

main()
