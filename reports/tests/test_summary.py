"""The summary's figures equal a recount from the rows, whatever the zone, grouping and range, for one tenant
only; and the rollups the hooks keep equal the rollups rebuilt from the rows."""

import csv
import io
from datetime import date

import pytest
from django.db import transaction
from django_tenants.utils import schema_context

from agents.models import Assignment
from core.tests.support import api_client, make_user, token_for
from conversations import services as conversation_services
from conversations.models import Chat, Message
from core.models import User
from reports.models import Rollup
from reports.services import report_sla_breached, reports_rebuild
from reports.tests.timeline import recount, utc

SUMMARY = "/api/reports/summary"

# America/New_York moves to daylight time on 2026-03-08 (a 23-hour day); Asia/Kolkata's days start at
# 18:30 UTC; the timeline (conftest.py) spans both, with chats on either side of each local midnight.
ZONES = ["UTC", "Asia/Kolkata", "America/New_York"]


def _by_key(summary: dict) -> dict:
    return {row["key"]: row for row in summary["data"]}


def test_summary_equals_a_recount_from_the_rows(timeline, tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    """Every zone, grouping and range (one timeline played once for all of them)."""
    ranges = [(date(2026, 3, 5), date(2026, 3, 13)), (date(2026, 3, 8), date(2026, 3, 8)), (date(2026, 3, 7), date(2026, 3, 9))]
    for tz in ZONES:
        for group_by in ("day", "agent", "application"):
            for since, until in ranges:
                case = (tz, group_by, since, until)
                # when
                query = {"since": since.isoformat(), "until": until.isoformat(), "group_by": group_by, "tz": tz}
                response = tenant_a_admin_api.get(SUMMARY, query)

                # then
                assert response.status_code == 200, (case, response.content)
                expected = recount(tenant=tenant_a, since=since, until=until, tz=tz, group_by=group_by)
                summary = response.json()
                assert summary["totals"] == expected["totals"], case
                assert _by_key(summary) == _by_key(expected), case
                if group_by == "day":
                    assert [row["key"] for row in summary["data"]] == [row["key"] for row in expected["data"]], case

    # The comparison means something only if the figures are not all zeros and nulls, and if the timeline
    # holds what makes first and latest assignment differ.
    with schema_context(tenant_a.schema_name):
        end_reasons = set(Assignment.objects.values_list("end_reason", flat=True))
        agent_messages = Message.objects.filter(sender="agent").order_by("chat_id", "number")
        first_is_private = {}
        for chat_id, is_private in agent_messages.values_list("chat_id", "is_private"):
            first_is_private.setdefault(chat_id, is_private)
        answered_after_a_note = Chat.objects.filter(
            id__in=[chat_id for chat_id, private in first_is_private.items() if private], first_response_at__isnull=False
        )
    assert {"timed_out", "transferred", "resolved"} <= end_reasons
    # Private notes: some chats' first agent message is one, and they were answered later.
    assert answered_after_a_note.exists()
    totals = tenant_a_admin_api.get(SUMMARY, {"since": "2026-03-05", "until": "2026-03-13"}).json()["totals"]
    assert totals["chats_created"] == 60
    assert totals["chats_resolved"] > 10 and totals["messages"] > 30
    for name in ("first_response_seconds", "wait_seconds", "resolution_seconds"):
        assert totals[name]["median"] is not None and totals[name]["p90"] >= totals[name]["median"]

    # The other tenant, busy at the same hours, sees only its own figures.
    response = tenant_b_admin_api.get(SUMMARY, {"since": "2026-03-05", "until": "2026-03-13", "group_by": "agent"})
    expected = recount(tenant=tenant_b, since=date(2026, 3, 5), until=date(2026, 3, 13), tz="UTC", group_by="agent")
    assert response.json()["totals"] == expected["totals"]
    assert response.json()["totals"]["chats_created"] == 25
    assert _by_key(response.json()) == _by_key(expected)


def test_incremental_rollups_equal_a_rebuild_from_the_rows(timeline, tenant_a):
    with schema_context(tenant_a.schema_name):
        columns = ("bucket", "application_id", "agent_id", "metric", "seconds", "count")
        incremental = sorted(Rollup.objects.values_list(*columns))
        assert len(incremental) > 100

        written = reports_rebuild()

        rebuilt = sorted(Rollup.objects.values_list(*columns))
    assert written == len(rebuilt)
    assert rebuilt == incremental

    # A rebuild also puts back first times changed by hand.
    with schema_context(tenant_a.schema_name):
        first_times = sorted(Chat.objects.values_list("id", "first_assigned_at", "first_response_at"))
        Chat.objects.update(first_assigned_at=None, first_response_at=None)

        reports_rebuild(backfill_first_times=True)

        assert sorted(Chat.objects.values_list("id", "first_assigned_at", "first_response_at")) == first_times
        assert sorted(Rollup.objects.values_list(*columns)) == incremental


def test_a_redelivered_drain_batch_counts_nothing_twice(tenant_a, clock):
    # given a chat and a message, persisted once
    clock.at = utc(2026, 3, 6, 10)
    with schema_context(tenant_a.schema_name):
        application = conversation_services.application_create(name="once")
        records = [
            {"kind": "chat", "app": application.id, "number": 1, "customer_id": "c", "at": clock.at.isoformat()},
            {"kind": "message", "app": application.id, "chat": 1, "number": 1, "body": "x", "sender": "customer",
             "author": None, "at": clock.at.isoformat()},
        ]  # fmt: skip
        conversation_services._persist_batch(records)

        # when the same batch is persisted again (a drain that died before trimming its list)
        conversation_services._persist_batch(records)

        # then
        counts = dict(Rollup.objects.values_list("metric", "count"))
    assert counts == {"created": 1, "messages": 1}


def test_default_range_is_the_last_seven_days_in_the_zone(tenant_a_admin_api, clock):
    clock.at = utc(2026, 3, 12, 20)  # already the 13th in Kolkata (01:30)
    assert [row["key"] for row in tenant_a_admin_api.get(SUMMARY).json()["data"]] == [
        f"2026-03-{day:02d}" for day in range(6, 13)
    ]
    assert [row["key"] for row in tenant_a_admin_api.get(SUMMARY, {"tz": "Asia/Kolkata"}).json()["data"]] == [
        f"2026-03-{day:02d}" for day in range(7, 14)
    ]


def test_csv_has_the_same_rows(timeline, tenant_a_admin_api):
    query = {"since": "2026-03-05", "until": "2026-03-13", "group_by": "day", "tz": "America/New_York"}
    as_json = tenant_a_admin_api.get(SUMMARY, query).json()

    response = tenant_a_admin_api.get(SUMMARY, query, HTTP_ACCEPT="text/csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == len(as_json["data"]) == 9
    for line, row in zip(rows, as_json["data"], strict=True):
        assert line["key"] == row["key"]
        assert int(line["chats_created"]) == row["chats_created"]
        assert int(line["messages"]) == row["messages"]
        median = row["first_response_seconds"]["median"]
        assert line["first_response_seconds_median"] == ("" if median is None else str(median))
        assert int(line["sla_breaches"]) == 0


@pytest.mark.parametrize(
    "query",
    [
        {"since": "2026-02-30"},
        {"since": "yesterday"},
        {"until": "2026-03-01T00:00:00Z"},
        {"since": "2026-03-10", "until": "2026-03-01"},
        {"since": "2024-01-01", "until": "2026-01-01"},
        {"since": "1999-12-31", "until": "2000-01-02"},
        {"until": "9999-12-31"},
        {"until": "0001-01-01"},
        {"since": "0001-01-01", "until": "0001-01-03"},
        {"until": "2000-01-03"},
        {"tz": "Mars/Olympus"},
        {"tz": "../../../etc/passwd"},
        {"tz": "Asia/Kolkata\x00"},
        {"since": "2026-03-01\x00"},
        {"group_by": "month"},
        {"group_by": "\x00"},
        {"tz": "x" * 5000},
        {"until": " 2026-03-01"},
        {"tz": "utc"},
        {"since": "2024-02-29", "until": "2025-03-01"},  # 367 days: one more than the maximum
    ],
)
def test_bad_input_is_a_400_json(tenant_a_admin_api, query):
    response = tenant_a_admin_api.get(SUMMARY, query)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) <= {"since", "until", "tz", "group_by", "detail"}

    # the same for a client asking for CSV: the error is still JSON
    response = tenant_a_admin_api.get(SUMMARY, query, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"


def test_an_empty_parameter_is_one_not_given(tenant_a_admin_api, clock):
    # As an HTML form sends an empty field: the default, not an error.
    clock.at = utc(2026, 3, 12, 20)
    default = tenant_a_admin_api.get(SUMMARY).json()
    assert tenant_a_admin_api.get(f"{SUMMARY}?since=&until=&tz=&group_by=").json() == default
    assert [row["key"] for row in default["data"]] == [f"2026-03-{day:02d}" for day in range(6, 13)]


def test_the_longest_range_is_366_days_both_ends_included(tenant_a_admin_api):
    response = tenant_a_admin_api.get(SUMMARY, {"since": "2024-02-29", "until": "2025-02-28", "group_by": "day"})
    assert response.status_code == 200
    assert len(response.json()["data"]) == 366


def test_surrogates_and_nul_in_the_raw_query_string(tenant_a_admin_api):
    for raw in ("tz=%ED%A0%80", "since=%00", "tz=%C0%AF", "group_by=day&tz=Europe%2F%00"):
        response = tenant_a_admin_api.get(f"{SUMMARY}?{raw}")
        assert response.status_code == 400, (raw, response.content)
        assert response.json()


def test_only_the_tenants_admins(tenant_a, tenant_b_admin_api):
    agent = make_user(tenant=tenant_a, role=User.Role.AGENT)
    assert api_client(tenant=tenant_a, token=token_for(agent, tenant=tenant_a)).get(SUMMARY).status_code == 403
    assert api_client(tenant=tenant_a).get(SUMMARY).status_code == 401
    # another tenant's admin token means nothing on this tenant's host
    tenant_b_admin_api.credentials(HTTP_AUTHORIZATION=tenant_b_admin_api._credentials["HTTP_AUTHORIZATION"])
    tenant_b_admin_api.defaults["HTTP_HOST"] = f"{tenant_a.schema_name}.localhost"
    assert tenant_b_admin_api.get(SUMMARY).status_code == 401


def test_sla_breaches_count_in_the_day_of_the_breach_for_the_agent_holding_the_chat(timeline, tenant_a, tenant_a_admin_api):
    # given breaches reported by routing's SLA checks (issue 24), in their transactions
    with schema_context(tenant_a.schema_name):
        held = Chat.objects.filter(assigned_agent__isnull=False).order_by("id").first()
        waiting = Chat.objects.filter(assigned_agent__isnull=True).order_by("id").first()
        with transaction.atomic():
            report_sla_breached(chat_id=held.id, at=utc(2026, 3, 8, 23, 50))  # the 9th in Kolkata
        with transaction.atomic():
            report_sla_breached(chat_id=waiting.id, at=utc(2026, 3, 10, 1))
        # one whose transaction rolls back counts nothing
        with pytest.raises(RuntimeError), transaction.atomic():
            report_sla_breached(chat_id=held.id, at=utc(2026, 3, 10, 1))
            raise RuntimeError
    query = {"since": "2026-03-07", "until": "2026-03-11"}

    def breaches(**extra) -> dict:
        summary = tenant_a_admin_api.get(SUMMARY, {**query, **extra}).json()
        return {row["key"]: row["sla_breaches"] for row in summary["data"] if row["sla_breaches"]} | {
            "total": summary["totals"]["sla_breaches"]
        }

    # then
    assert breaches() == {"2026-03-08": 1, "2026-03-10": 1, "total": 2}
    assert breaches(tz="Asia/Kolkata") == {"2026-03-09": 1, "2026-03-10": 1, "total": 2}
    assert breaches(group_by="agent") == {held.assigned_agent_id: 1, None: 1, "total": 2}

    # and a rebuild, which has no row to recount them from, keeps them
    with schema_context(tenant_a.schema_name):
        reports_rebuild()
    assert breaches(group_by="agent") == {held.assigned_agent_id: 1, None: 1, "total": 2}


def test_csv_of_an_empty_range(tenant_a_admin_api):
    for group_by, lines in (("agent", []), ("day", [["2020-01-01", "0", "0", "0", "", "", "", "", "", "", "0"]])):
        query = {"since": "2020-01-01", "until": "2020-01-01", "group_by": group_by}

        response = tenant_a_admin_api.get(SUMMARY, query, HTTP_ACCEPT="text/csv")

        assert response.status_code == 200
        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert rows[0][0] == "key" and rows[0][-1] == "sla_breaches" and len(rows[0]) == 11
        assert rows[1:] == lines
