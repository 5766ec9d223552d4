import django.contrib.postgres.fields
import django.contrib.postgres.indexes
import django.db.models.expressions
from django.db import migrations, models


class Migration(migrations.Migration):
    """Message search reads one window of a chat at a time (conversations.selectors.message_search_page).

    The trigram index on `body` alone could only hand over every match in the tenant: a page of a word in 1% of
    a 1M-message chat cost 10,000 heap rows through it, or a walk of the (chat, number) index filtering ~5,000
    rows by ILIKE (~12 ms here). This index holds each message's search bucket (its chat and number // 1024, in
    a one-item array: GIN's built-in array_ops) beside its body's trigrams, so one GIN scan intersects "these
    buckets" with "these trigrams" and the heap is read for the window's matches only: the same cost at 10k or
    1M messages. It also serves body-only trigram queries, so the old index goes (one GIN index to maintain per
    message insert, not two).

    The statistics target of `body` goes back to the default: 0005 raised it so the planner could choose
    between the trigram index and the (chat, number) walk by a word's frequency; the search query no longer
    leaves it that choice, and estimating ILIKE against 1000 histogram entries cost ~2 ms of planning per query.
    """

    dependencies = [("conversations", "0006_chat_assignment_partial_indexes")]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=django.contrib.postgres.indexes.GinIndex(
                django.db.models.expressions.RawSQL(
                    "ARRAY[chat_id * 4194304 + number / 1024]",
                    (),
                    output_field=django.contrib.postgres.fields.ArrayField(
                        base_field=models.BigIntegerField(), size=None
                    ),
                ),
                django.contrib.postgres.indexes.OpClass(models.F("body"), name="public.gin_trgm_ops"),
                name="message_search_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="message", name="message_body_trgm_idx"),
        migrations.RunSQL(
            "ALTER TABLE conversations_message ALTER COLUMN body SET STATISTICS -1",
            reverse_sql="ALTER TABLE conversations_message ALTER COLUMN body SET STATISTICS 1000",
        ),
    ]
