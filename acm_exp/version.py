"""The installed package's version, in a leaf module (it imports nothing from acm_exp), so any module
can record it without importing the package's public API.

Read from the installed distribution's metadata (pyproject.toml's ``version``), the one place it is
declared; a source tree that is not installed reports ``0+unknown``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("acm_exp")
except PackageNotFoundError:
    __version__ = "0+unknown"
