"""Local development: `bin/dev`."""

from sociomile.settings.base import *  # noqa: F403
from sociomile.settings.env import env_bool

DEBUG = env_bool("DEBUG", True)
