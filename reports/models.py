from django.db import models

from conversations.models import Application


class Rollup(models.Model):
    """Exact pre-counted figures: how many events of one kind (`metric`) fell in one 15-minute UTC bucket, for
    one application and one agent; for a duration metric, how many of them lasted exactly `seconds`.

    A histogram per bucket rather than a total: medians and p90s of any range are then exact (the histograms of
    the range merged), and every IANA zone's day is a union of 15-minute buckets. Written by reports.services
    in the same transaction as the change it counts (upserts that add, so concurrent writers never lose a
    count); `reports_rebuild` recomputes it from the chats and messages. See docs/reports.md.
    """

    class Metric(models.TextChoices):
        CREATED = "created", "Chats created (bucket of created_at)"
        RESOLVED = "resolved", "Chats resolved (bucket of resolved_at)"
        MESSAGES = "messages", "Messages (bucket of the message's created_at)"
        FIRST_RESPONSE = "first_response", "Seconds from creation to the first agent message"
        WAIT = "wait", "Seconds from creation to the first assignment"
        RESOLUTION = "resolution", "Seconds from creation to resolution"

    bucket = models.DateTimeField(help_text="Start of the 15-minute UTC bucket.")
    application = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False, related_name="+")
    # The agent's user id, 0 for none (a chat's creation, a customer's message): a plain column, not a foreign
    # key, so the figures of a deleted agent stay (as agents_assignment keeps its history), and 0 rather than
    # NULL so that the unique key decides the upsert.
    agent_id = models.BigIntegerField(default=0)
    metric = models.CharField(max_length=16, choices=Metric.choices)
    seconds = models.IntegerField(default=0, help_text="The duration, for duration metrics; 0 for counts.")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The upsert's conflict target, and the summary's range scan (bucket first; `count` included so
            # that the scan reads the index alone).
            models.UniqueConstraint(
                fields=["bucket", "application", "agent_id", "metric", "seconds"],
                name="rollup_key",
                include=["count"],
            )
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} {self.metric} {self.seconds}s x{self.count}"
