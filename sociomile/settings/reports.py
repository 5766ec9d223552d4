"""Reports (reports app): the backfill of the rollups for chats that existed before them."""

from sociomile.settings.env import env_int

# --- Reports: the rollups' backfill (reports_backfill) ------------------------------------------------
# Chats per backfill batch: one transaction, during which the tenant's report hooks wait (about 0.1 s per
# 1,000 chats on the bench machine), so keep it small enough that the drain does not notice.
REPORTS_BACKFILL_BATCH_SIZE = env_int("REPORTS_BACKFILL_BATCH_SIZE", 1000)
# What a summary answers while the tenant's backfill runs: 503 with this Retry-After.
REPORTS_BACKFILL_RETRY_AFTER_SECONDS = env_int("REPORTS_BACKFILL_RETRY_AFTER_SECONDS", 60)
