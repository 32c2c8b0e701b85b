"""`python -m zbatch` works like `zbatch`."""

from .cli.commands import main

main()
