from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.tests.support import make_user
from core import paginator as paging
from core.models import User
from core.paginator import CappedCountPaginator


def test_counts_exactly_below_the_limit_and_stops_at_it(db, monkeypatch):
    monkeypatch.setattr(paging, "COUNT_LIMIT", 3)
    for _ in range(5):
        make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    everyone = User.objects.order_by("pk")

    assert CappedCountPaginator(everyone.filter(pk__in=list(everyone.values_list("pk", flat=True)[:2])), 10).count == 2
    with CaptureQueriesContext(connection) as queries:
        filtered = CappedCountPaginator(everyone.filter(role=User.Role.PLATFORM_ADMIN), 2).count
    assert filtered == 3  # the limit, not 5
    assert "LIMIT 4" in queries[0]["sql"]
    # Unfiltered: the planner's estimate when it is bigger than the limit, else the limit.
    assert CappedCountPaginator(everyone, 2).count >= 3
