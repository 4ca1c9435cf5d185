"""``python -m ayar``: the same command line as the ``ayar`` script."""

from ayar.cli import main

main()
