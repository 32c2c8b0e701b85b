"""The version, a leaf every module may import (the package face, the HTTP client's
User-Agent, ``zbatch --version``) without importing the package face. pyproject.toml reads it
from here (``[tool.setuptools.dynamic]``), so the installed metadata says the same."""

__version__ = "0.1.0"
