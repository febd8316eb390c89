"""The error that stops crewchief with a message instead of a traceback.

Its own module so that everything raising it (settings checks, config loading) can be
imported without the config's pydantic models.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The config cannot be used; the message names the file, the key and the problem."""
