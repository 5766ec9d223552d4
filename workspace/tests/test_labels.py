"""Labels (issue 25): the tenant's vocabulary (GET staff, POST admin), put on and taken off a chat by its
assigned agent or an admin (idempotent), shown on /api/chats items (one query a page) and on the chat's
detail for staff, filtered with /api/chats?label=."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from conversations.models import Chat
from core.models import User
from core.tests.support import api_client, make_user, token_for
from workspace.models import ChatLabel, Label
from workspace.services import label_create


def _staff(tenant, role=User.Role.AGENT):
    return api_client(tenant=tenant, token=token_for(make_user(tenant=tenant, role=role), tenant=tenant))


@pytest.fixture
def chats(tenant_a, application_a, client_a, agent_a, drain):
    """Chats 1..3 of application A; chat 1 assigned to agent A. Labels "VIP" and "billing"."""
    for customer in ("c1", "c2", "c3"):
        client_a.post(f"/api/applications/{application_a.token}/chats", {"customer_id": customer})
    drain(tenant_a)
    with schema_context(tenant_a.schema_name):
        Chat.objects.filter(number=1).update(assigned_agent=agent_a, status=Chat.Status.ASSIGNED)
        labels = {"vip": label_create(name="VIP", color="#ff0000"), "billing": label_create(name="billing")}
    return {"url": f"/api/applications/{application_a.token}/chats", "labels": labels}


def _label_url(chats, number: int, label) -> str:
    return f"{chats['url']}/{number}/labels/{label if isinstance(label, int) else label.id}"


def _chat_labels(tenant) -> list[tuple[int, str]]:
    with schema_context(tenant.schema_name):
        return sorted(ChatLabel.objects.values_list("chat__number", "label__name"))


# --- the vocabulary ---------------------------------------------------------------------------------------------


def test_an_admin_creates_labels_and_staff_list_them(tenant_a, tenant_a_admin_api, agent_a_api):
    created = tenant_a_admin_api.post("/api/labels", {"name": "Refund", "color": "#00AA11"})
    plain = tenant_a_admin_api.post("/api/labels", {"name": "Spam"})

    assert created.status_code == 201
    assert created.json() == {"id": created.json()["id"], "name": "Refund", "color": "#00AA11"}
    assert plain.json()["color"] == "#1f93ff"
    listed = agent_a_api.get("/api/labels").json()
    assert [label["name"] for label in listed["data"]] == ["Refund", "Spam"] and listed["next_cursor"] is None


def test_a_label_name_is_unique_whatever_its_case(tenant_a, tenant_a_admin_api):
    tenant_a_admin_api.post("/api/labels", {"name": "VIP"})

    again = tenant_a_admin_api.post("/api/labels", {"name": "vip"})

    assert (again.status_code, again.json()) == (409, {"detail": "A label with this name exists already."})
    with schema_context(tenant_a.schema_name):
        assert list(Label.objects.values_list("name", flat=True)) == ["VIP"]


def test_an_agent_may_not_create_a_label(tenant_a, agent_a_api):
    response = agent_a_api.post("/api/labels", {"name": "mine"})

    assert response.status_code == 403
    with schema_context(tenant_a.schema_name):
        assert Label.objects.count() == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "a" * 65}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"name": 7}, "name"),
        ({"name": "x", "color": "red"}, "color"),
        ({"name": "x", "color": "#12345"}, "color"),
        ({"name": "x", "colour": "#123456"}, "colour"),
        ({}, "name"),
    ],
)
def test_bad_label_input_is_400_and_writes_nothing(tenant_a, tenant_a_admin_api, body, field):
    response = tenant_a_admin_api.post("/api/labels", body)

    assert response.status_code == 400 and field in response.json()
    with schema_context(tenant_a.schema_name):
        assert Label.objects.count() == 0


def test_labels_do_not_cross_tenants(tenant_a, tenant_b, tenant_a_admin_api, tenant_b_admin_api):
    tenant_a_admin_api.post("/api/labels", {"name": "only-in-a"})

    assert tenant_b_admin_api.get("/api/labels").json()["data"] == []
    assert tenant_b_admin_api.post("/api/labels", {"name": "only-in-a"}).status_code == 201  # B's own namespace


# --- a chat's labels --------------------------------------------------------------------------------------------


def test_the_assigned_agent_labels_a_chat_idempotently(tenant_a, chats, agent_a_api):
    vip, billing = chats["labels"]["vip"], chats["labels"]["billing"]

    first = agent_a_api.post(_label_url(chats, 1, vip))
    again = agent_a_api.post(_label_url(chats, 1, vip))
    other = agent_a_api.post(_label_url(chats, 1, billing))

    assert (first.status_code, first.json()) == (200, {"labels": ["VIP"]})
    assert (again.status_code, again.json()) == (200, {"labels": ["VIP"]})
    assert other.json() == {"labels": ["VIP", "billing"]}
    assert _chat_labels(tenant_a) == [(1, "VIP"), (1, "billing")]

    removed = agent_a_api.delete(_label_url(chats, 1, vip))
    removed_again = agent_a_api.delete(_label_url(chats, 1, vip))

    assert (removed.status_code, removed.json()) == (200, {"labels": ["billing"]})
    assert (removed_again.status_code, removed_again.json()) == (200, {"labels": ["billing"]})
    assert _chat_labels(tenant_a) == [(1, "billing")]


def test_an_admin_labels_any_chat_another_agent_may_not(tenant_a, chats, tenant_a_admin_api):
    vip = chats["labels"]["vip"]
    other = _staff(tenant_a)

    refused = other.post(_label_url(chats, 1, vip))  # chat 1 is agent A's
    refused_unassigned = other.post(_label_url(chats, 2, vip))  # nobody's: admins only, as for a reply
    allowed = tenant_a_admin_api.post(_label_url(chats, 2, vip))

    assert refused.status_code == 403 and refused.json() == {"detail": "Only the chat's assigned agent or an admin may label it."}
    assert refused_unassigned.status_code == 403
    assert allowed.status_code == 200
    assert _chat_labels(tenant_a) == [(2, "VIP")]


def test_the_client_and_other_tenants_cannot_label(tenant_a, tenant_b, chats, client_a):
    vip = chats["labels"]["vip"]
    foreign = _staff(tenant_b, role=User.Role.ADMIN)
    foreign_on_a = api_client(tenant=tenant_a, token=foreign._credentials["HTTP_AUTHORIZATION"].split()[1])

    assert client_a.post(_label_url(chats, 1, vip)).status_code == 401
    assert foreign_on_a.post(_label_url(chats, 1, vip)).status_code == 401
    assert _chat_labels(tenant_a) == []


def test_forged_label_ids_chats_and_tokens_are_404(tenant_a, tenant_b, chats, tenant_a_admin_api):
    with schema_context(tenant_b.schema_name):
        foreign_label = label_create(name="foreign")  # another tenant's id: unknown here (unless ids collide)
    vip = chats["labels"]["vip"]
    missing_id = max(vip.id, chats["labels"]["billing"].id, foreign_label.id) + 1000

    cases = {
        "label": tenant_a_admin_api.post(_label_url(chats, 1, missing_id)),
        "label_delete": tenant_a_admin_api.delete(_label_url(chats, 1, missing_id)),
        "chat": tenant_a_admin_api.post(_label_url(chats, 99, vip)),
        "token": tenant_a_admin_api.post(f"/api/applications/forged/chats/1/labels/{vip.id}"),
    }

    assert {name: (r.status_code, r.json()) for name, r in cases.items()} == {
        "label": (404, {"detail": "No label with this id."}),
        "label_delete": (404, {"detail": "No label with this id."}),
        "chat": (404, {"detail": "No chat with this number."}),
        "token": (404, {"detail": "No application with this token."}),
    }
    assert _chat_labels(tenant_a) == []


# --- chats show their labels; the inbox filters by one ------------------------------------------------------------


def test_the_inbox_shows_labels_and_filters_by_a_label_in_any_case(tenant_a, chats, tenant_a_admin_api):
    vip, billing = chats["labels"]["vip"], chats["labels"]["billing"]
    for number, label in ((1, vip), (1, billing), (3, vip)):
        assert tenant_a_admin_api.post(_label_url(chats, number, label)).status_code == 200

    inbox = tenant_a_admin_api.get("/api/chats").json()["data"]
    vip_chats = tenant_a_admin_api.get("/api/chats", {"label": "vip"}).json()["data"]
    billing_assigned = tenant_a_admin_api.get("/api/chats", {"label": "billing", "status": "assigned"}).json()["data"]
    unknown = tenant_a_admin_api.get("/api/chats", {"label": "nope"})

    assert [(chat["number"], chat["labels"]) for chat in inbox] == [(3, ["VIP"]), (2, []), (1, ["VIP", "billing"])]
    assert [chat["number"] for chat in vip_chats] == [3, 1]
    assert [chat["number"] for chat in billing_assigned] == [1]
    assert (unknown.status_code, unknown.json()["data"]) == (200, [])


def test_the_inbox_reads_a_pages_labels_in_the_pages_own_query(tenant_a, chats, tenant_a_admin_api):
    for number in (1, 2, 3):
        for label in chats["labels"].values():
            tenant_a_admin_api.post(_label_url(chats, number, label))

    def queries(limit: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert len(tenant_a_admin_api.get("/api/chats", {"limit": limit}).json()["data"]) == limit
        return len(captured)

    assert queries(1) == queries(3)  # no query per chat


def test_an_over_long_label_filter_is_400_and_an_empty_one_no_filter(tenant_a, chats, tenant_a_admin_api):
    assert tenant_a_admin_api.get("/api/chats", {"label": "a" * 65}).status_code == 400
    # as `?status=&agent=`: an empty filter is no filter
    assert len(tenant_a_admin_api.get("/api/chats", {"label": ""}).json()["data"]) == 3


def test_the_chat_detail_shows_labels_to_staff_only(tenant_a, chats, client_a, agent_a_api):
    agent_a_api.post(_label_url(chats, 1, chats["labels"]["vip"]))

    staff = agent_a_api.get(f"{chats['url']}/1").json()
    client = client_a.get(f"{chats['url']}/1").json()

    assert staff["labels"] == ["VIP"]
    assert "labels" not in client and client["number"] == 1
