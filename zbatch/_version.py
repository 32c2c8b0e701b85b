"""The installed version, a leaf every module may import (the package face, the HTTP client's
User-Agent, ``zbatch --version``) without importing the package face."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zbatch")
except PackageNotFoundError:  # imported from a source tree or a zip, not installed
    __version__ = "0+unknown"
