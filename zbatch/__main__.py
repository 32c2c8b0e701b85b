"""`python -m zbatch` works like `zbatch`."""

from .cli import main

main()
