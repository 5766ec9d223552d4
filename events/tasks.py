from django.db import OperationalError, connection
from django.utils import timezone

from events.delivery import webhook_deliveries_send, webhook_work_settle, webhook_work_version
from events.retention import KIND as RETENTION_KIND
from events.retention import events_retention_run, events_retention_settle
from events.services import webhook_deliveries_continue, webhook_deliveries_scheduled_clear
from sociomile.celery import app
from tenants.metrics import tenant_deliveries_count
from tenants.work import tenant_work_version


# Idempotent (claims, leases and token-conditional writes), so a transient database error is retried; the
# tenant's `webhooks` mark catches anything that still slips through: it stays until a run settles it.
@app.task(ignore_result=True, autoretry_for=(OperationalError,), retry_backoff=1, retry_jitter=True, max_retries=3)
def webhook_deliveries_send_task() -> None:
    """One delivery run of the tenant's webhooks: sent on commit of the events that made deliveries (the
    fast path) and by the dispatcher when the tenant's `webhooks` mark comes due (retries, the safety net).
    A run with nothing due sends nothing. At its end the mark moves to the next due delivery, or goes."""
    # Cleared before the run claims anything: deliveries committed from here on send another run.
    webhook_deliveries_scheduled_clear()
    version = webhook_work_version()
    summary = webhook_deliveries_send()
    tenant_deliveries_count(
        schema_name=connection.schema_name, channel="webhook",
        outcomes={"succeeded": summary.succeeded, "retrying": summary.retrying, "dead": summary.dead},
    )  # fmt: skip
    next_due_at = webhook_work_settle(version=version)
    if next_due_at is not None and next_due_at <= timezone.now():
        webhook_deliveries_continue()


# Idempotent (it deletes what has expired, in batches that commit one by one), so retried like the run above.
@app.task(ignore_result=True, autoretry_for=(OperationalError,), retry_backoff=1, retry_jitter=True, max_retries=3)
def events_retention_task() -> None:
    """Deletes the tenant's expired events, their deliveries and attempts (events.retention); sent by the
    dispatcher when the tenant's `events_retention` mark comes due. At its end the mark moves to the next
    expiry, or goes."""
    version = tenant_work_version(kind=RETENTION_KIND)
    summary = events_retention_run()
    events_retention_settle(version=version, summary=summary)
