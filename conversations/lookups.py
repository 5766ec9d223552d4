from django.db.models.lookups import IContains


class TrigramIContains(IContains):
    """`body ILIKE '%q%'`: case-insensitive containment that a pg_trgm GIN index on the bare column serves.

    Django's `icontains` compiles to `UPPER(body) LIKE UPPER('%q%')`, which an index on `body` cannot
    serve: every search scanned the chat's messages. Escaping of `%`, `_` and `\\` in the value is Django's.
    """

    lookup_name = "trigram_icontains"

    def as_sql(self, compiler, connection):
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        rhs_sql, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs_sql} ILIKE {rhs_sql}", (*lhs_params, *rhs_params)


class TrigramIContainsUnestimated(TrigramIContains):
    """`body ILIKE concat('%q%')`: the same match, with a pattern the planner cannot read while planning.

    For a constant pattern PostgreSQL estimates how many bodies match by running it over the column's histogram
    sample (~2 ms of planning here), and a common word is usually absent from that sample: it takes the word for
    a rare one and prefers the trigrams alone over the search index's bucket keys, then reads every match in the
    tenant. `concat()` is stable, not immutable, so it is not folded into a constant: the planner applies its
    fixed estimate (0.5% of rows) and, on a big table, uses the bucket keys as well. The index serves it all
    the same (the pattern is known when the scan starts). Only where the index also has bucket keys to use:
    with nothing else to go on, a query without trigrams (`ab`) would be planned as a scan of the whole index.
    """

    lookup_name = "trigram_icontains_unestimated"

    def as_sql(self, compiler, connection):
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        rhs_sql, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs_sql} ILIKE concat({rhs_sql})", (*lhs_params, *rhs_params)
