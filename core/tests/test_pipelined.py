"""core.prepared.pipelined(): statements sent without waiting, each cursor still reading its own answers, errors
still Django's and still inside the caller's transaction."""

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from core.models import User
from core.prepared import pipelined, prepared_cursor
from core.tests.support import postgres_round_trips


def test_statements_between_two_reads_travel_together(db):
    def eleven_statements(cursor) -> list:
        for n in range(10):
            with prepared_cursor() as other:
                other.execute("SELECT %s::integer", [n])
        cursor.execute("SELECT %s::integer", [10])
        return cursor.fetchall()

    with transaction.atomic(), prepared_cursor() as cursor, postgres_round_trips() as trips:
        assert eleven_statements(cursor) == [(10,)]
    assert trips.count >= 11  # one wait for each statement's answer
    with transaction.atomic(), pipelined(), prepared_cursor() as cursor, postgres_round_trips() as trips:
        assert eleven_statements(cursor) == [(10,)]
    # about one wait: the answers still missing when the read needs them (those already in cost none; an answer
    # arriving in pieces can cost a second)
    assert trips.count <= 2


@pytest.mark.parametrize("opened_by", ["prepared_cursor", "django"])
def test_a_cursor_that_sent_several_statements_reads_the_last_ones_answer(db, opened_by):
    with transaction.atomic(), pipelined():
        with prepared_cursor() if opened_by == "prepared_cursor" else connection.cursor() as cursor:
            # when one cursor sends statements whose answers PostgreSQL sends before any sync (it flushes what it
            # has when it waits for the rest of a statement too large to arrive at once: the drain's INSERT of a
            # big batch's messages), and psycopg takes them in while it sends the last one
            cursor.execute("SELECT 1 AS first WHERE %s", [True])
            cursor.execute("SELECT n FROM generate_series(1, %s) AS n", [2000])
            cursor.execute("SELECT 2 AS last WHERE length(%s::text) > 0", ["x" * 4_000_000])
            # then it reads the last statement's rows: psycopg alone returned the first one's, the answer the
            # cursor held (the drain read its UPDATE's answer so: "the last operation didn't produce records")
            assert cursor.fetchall() == [(2,)]


def test_rowcount_is_the_statements_own(db, tenant_a):
    from django_tenants.utils import schema_context

    with schema_context(tenant_a.schema_name):
        User.objects.create(email="one@example.test")
        User.objects.create(email="two@example.test")
        with transaction.atomic(), pipelined():
            # the ORM's UPDATE returns the cursor's rowcount: -1 while the answer had not arrived
            assert User.objects.filter(email__endswith="@example.test").update(name="x") == 2
            with prepared_cursor() as cursor:
                cursor.execute("UPDATE core_user SET name = %s WHERE email = %s", ["y", "one@example.test"])
                assert cursor.rowcount == 1


def test_a_refused_statement_raises_djangos_error_and_rolls_back_the_block(db):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE pipelined_test (id integer PRIMARY KEY)")
    # a statement refused mid-block, nothing read after it: the error comes at the block's end, still inside
    # the atomic block, which rolls back
    with pytest.raises(IntegrityError):
        with transaction.atomic(), pipelined(), prepared_cursor() as cursor:
            cursor.execute("INSERT INTO pipelined_test VALUES (%s)", [1])
            cursor.execute("INSERT INTO pipelined_test VALUES (%s)", [1])
            cursor.execute("INSERT INTO pipelined_test VALUES (%s)", [2])
    # refused at a read: the same
    with pytest.raises(IntegrityError):
        with transaction.atomic(), pipelined(), prepared_cursor() as cursor:
            cursor.execute("INSERT INTO pipelined_test VALUES (%s)", [3])
            cursor.execute("INSERT INTO pipelined_test VALUES (%s) RETURNING id", [3])
            cursor.fetchall()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pipelined_test")
        assert cursor.fetchone() == (0,)
        # and the connection is usable, out of pipeline mode
        assert connection.connection.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
