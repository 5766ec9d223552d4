from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property

# Counting more rows than this for the admin's "N results" and page links costs more than it tells.
COUNT_LIMIT = 10_000


class CappedCountPaginator(Paginator):
    """A paginator for the admin's big tables (chats, events, outbound messages) that never counts them all.

    The filtered count stops at COUNT_LIMIT rows (`SELECT COUNT(*) FROM (... LIMIT n)`); beyond that an
    unfiltered page shows PostgreSQL's planner estimate of the table's size, a filtered one the limit, so
    the last pages of a million-row table are reached by filtering (status, date, search), not by paging.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        capped = queryset.order_by()[: COUNT_LIMIT + 1].count()
        if capped <= COUNT_LIMIT:
            return capped
        if not queryset.query.where:
            with connection.cursor() as cursor:
                # to_regclass follows the search_path: the tenant's own table.
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [queryset.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > COUNT_LIMIT:
                return row[0]
        return COUNT_LIMIT
