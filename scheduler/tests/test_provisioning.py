"""Every tenant has its outbound job from the moment it exists, and loses it when it is deleted."""

import json

from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from conftest import PASSWORD
from scheduler.models import SchedulerSetting
from scheduler.services import scheduler_ensure
from tenants.services import tenant_create, tenant_delete


def test_a_tenant_gets_its_job_when_created_and_loses_it_when_deleted(db):
    tenant = tenant_create(name="Short", slug="short-lived", admin_email="a@short.test", admin_password=PASSWORD)

    task = PeriodicTask.objects.get(name="outbound-send:short-lived")
    assert (task.enabled, task.interval.every, json.loads(task.headers)) == (True, 120, {"_schema_name": "short-lived"})
    with schema_context("short-lived"):
        assert SchedulerSetting.objects.values_list("running", "interval_seconds", "batch_size").get() == (True, 120, 2)

    tenant_delete(tenant=tenant)

    assert not PeriodicTask.objects.filter(name="outbound-send:short-lived").exists()


def test_ensure_gives_a_tenant_made_before_the_scheduler_its_job_and_is_idempotent(tenant_a):
    # given a tenant without its setting or beat entry (as if it predated this app)
    PeriodicTask.objects.filter(name="outbound-send:alpha").delete()
    with schema_context(tenant_a.schema_name):
        SchedulerSetting.objects.all().delete()

        # when ensured, twice
        first = scheduler_ensure()
        second = scheduler_ensure()

        # then it has one of each, with the defaults
        assert (first.pk, second.pk, second.running, second.interval_seconds) == (1, 1, True, 120)
        assert SchedulerSetting.objects.count() == 1
    assert PeriodicTask.objects.filter(name="outbound-send:alpha", enabled=True).count() == 1


def test_ensure_brings_a_beat_entry_out_of_line_back_to_the_setting(tenant_a):
    PeriodicTask.objects.filter(name="outbound-send:alpha").update(enabled=False)

    with schema_context(tenant_a.schema_name):
        scheduler_ensure()

    assert PeriodicTask.objects.get(name="outbound-send:alpha").enabled is True
