import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError
from django_tenants.utils import get_public_schema_name, schema_context

from reports.models import Backfill
from reports.services import reports_backfill_step
from tenants.models import Tenant

# A batch that found the next chat locked (its transaction is about to count it or let this count it)
# tries again after this.
BUSY_PAUSE_SECONDS = 0.2


class Command(BaseCommand):
    help = (
        "Counts the chats that existed before the report rollups into them, batch by batch, for every tenant "
        "whose backfill is not done (or the one given). Resumable: each batch commits its progress. Run it after "
        "deploying migration reports.0002; the tenants' summaries answer 503 until theirs is done."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant (its slug).")
        parser.add_argument("--batch-size", type=int, default=None, help="Chats per batch (REPORTS_BACKFILL_BATCH_SIZE).")
        parser.add_argument("--pause", type=float, default=0.0, help="Seconds between batches, to spare a busy database.")

    def handle(self, *args, **options):
        batch_size = options["batch_size"] or settings.REPORTS_BACKFILL_BATCH_SIZE
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        tenants = Tenant.objects.exclude(schema_name=get_public_schema_name()).order_by("schema_name")
        if options["tenant"]:
            tenants = tenants.filter(schema_name=options["tenant"])
            if not tenants.exists():
                raise CommandError(f"no tenant {options['tenant']!r}")
        for tenant in tenants.iterator():
            with schema_context(tenant.schema_name):
                if Backfill.objects.filter(done=False).exists():
                    self._backfill(tenant.schema_name, batch_size, options["pause"])

    def _backfill(self, schema: str, batch_size: int, pause: float) -> None:
        started, chats = time.monotonic(), 0
        while True:
            try:
                step = reports_backfill_step(batch_size=batch_size)
            except OperationalError as error:  # a deadlock or a lost connection: the step rolled back whole
                self.stderr.write(f"{schema}: batch failed ({error}); trying again")
                time.sleep(BUSY_PAUSE_SECONDS)
                continue
            chats += step.chats
            if step.done:
                break
            time.sleep(pause if step.chats else BUSY_PAUSE_SECONDS)
        self.stdout.write(f"{schema}: rollups backfilled ({chats} chats in {time.monotonic() - started:.1f} s)")
