"""Every tenant has its outbound job from the moment it exists, without a beat entry of its own."""

from datetime import timedelta

from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from core.tests.support import PASSWORD
from scheduler.models import SchedulerSetting
from scheduler.services import scheduler_ensure
from scheduler.tests.factories import make_outbound_messages
from tenants.models import TenantWork
from tenants.services import tenant_create, tenant_delete


def test_a_tenant_gets_its_job_when_created_and_no_beat_row(db):
    beat_rows = PeriodicTask.objects.count()

    tenant = tenant_create(name="Short", slug="short-lived", admin_email="a@short.test", admin_password=PASSWORD)

    with schema_context("short-lived"):
        assert SchedulerSetting.objects.values_list("running", "interval_seconds", "batch_size").get() == (True, 120, 2)
    # provisioning writes no beat rows, and an idle tenant has nothing in the due-work index
    assert PeriodicTask.objects.count() == beat_rows
    assert not TenantWork.objects.filter(tenant=tenant).exists()

    tenant_delete(tenant=tenant)


def test_a_deleted_tenant_leaves_no_due_work(db):
    tenant = tenant_create(name="Short", slug="short-lived", admin_email="a@short.test", admin_password=PASSWORD)
    with schema_context("short-lived"):
        make_outbound_messages(1)
        scheduler_ensure()
    assert TenantWork.objects.filter(tenant=tenant, kind="outbound").count() == 1

    tenant_delete(tenant=tenant)

    assert not TenantWork.objects.filter(tenant_id=tenant.id).exists()


def test_ensure_gives_a_tenant_made_before_the_scheduler_its_job_and_is_idempotent(tenant_a):
    # given a tenant without its setting (as if it predated this app), with a message waiting
    with schema_context(tenant_a.schema_name):
        SchedulerSetting.objects.all().delete()
        make_outbound_messages(1)

        # when ensured, twice
        first = scheduler_ensure()
        second = scheduler_ensure()

        # then it has one setting with the defaults, and its message is due at its first run time
        assert (first.pk, second.pk, second.running, second.interval_seconds) == (1, 1, True, 120)
        assert SchedulerSetting.objects.count() == 1
    due = TenantWork.objects.filter(tenant=tenant_a, kind="outbound").values_list("due_at", flat=True)
    assert list(due) == [second.schedule_anchor_at + timedelta(seconds=120)]
