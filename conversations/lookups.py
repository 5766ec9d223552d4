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

