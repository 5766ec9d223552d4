"""Local development: `bin/dev`."""

from sociomile.settings.base import *  # noqa: F403
from sociomile.settings.env import env_bool

DEBUG = env_bool("DEBUG", True)
# Local receivers (a webhook on 127.0.0.1) are what development uses.
OUTBOUND_WEBHOOK_ALLOW_PRIVATE = env_bool("OUTBOUND_WEBHOOK_ALLOW_PRIVATE", True)
