"""Teams and what routes chats to them (PRODUCT.md, "Teams, business hours and SLA").

The routing of an application, and of a chat moved to another team's queue, are rows of this app rather than
columns of `conversations`: the core apps import each other in one direction (conversations <- agents <-
routing), and the assignment engine reads them with one LEFT JOIN each.
"""

from django.db import models

from core.models import TimestampedModel


class Team(TimestampedModel):
    """A group of agents that serves the chats routed to it. `business_hours` None: always open (the shape
    is validated by routing.hours.business_hours_validate before it is stored)."""

    name = models.CharField(max_length=255)
    agents = models.ManyToManyField("agents.Agent", related_name="teams", blank=True)
    business_hours = models.JSONField(null=True, blank=True)
    away_message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class ApplicationTeam(models.Model):
    """An application routed to a team: its chats go only to that team's agents. No row: any agent."""

    application = models.OneToOneField(
        "conversations.Application", on_delete=models.CASCADE, primary_key=True, related_name="route"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="applications")

    def __str__(self) -> str:
        return f"{self.application_id} -> {self.team_id}"


class ChatTeam(models.Model):
    """A chat transferred to a team's queue: overrides its application's team from then on."""

    chat = models.OneToOneField("conversations.Chat", on_delete=models.CASCADE, primary_key=True, related_name="route")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="transferred_chats")

    def __str__(self) -> str:
        return f"{self.chat_id} -> {self.team_id}"


class ChatAway(models.Model):
    """The away message a chat got when it arrived while its team was closed: its row is what makes it one
    per chat (inserted ON CONFLICT DO NOTHING before the message is queued)."""

    chat = models.OneToOneField("conversations.Chat", on_delete=models.CASCADE, primary_key=True, related_name="+")
    sent_at = models.DateTimeField()


class SlaPolicy(TimestampedModel):
    """Service-level targets, in business time (the chat's team's hours; calendar time without a team or hours),
    counted from the chat's arrival, for the chats of its applications (ApplicationSla)."""

    name = models.CharField(max_length=255)
    first_response_seconds = models.PositiveIntegerField()
    resolution_seconds = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        verbose_name = "SLA policy"
        verbose_name_plural = "SLA policies"

    def __str__(self) -> str:
        return self.name


class ApplicationSla(models.Model):
    """An application under a policy: at most one each (a policy that lists an application takes it over)."""

    application = models.OneToOneField(
        "conversations.Application", on_delete=models.CASCADE, primary_key=True, related_name="sla_policy_link"
    )
    policy = models.ForeignKey(SlaPolicy, on_delete=models.CASCADE, related_name="application_links")


class ChatSla(models.Model):
    """A chat's SLA, fixed when it arrived under a policy: its due times, when it met the first response (its
    first agent message that is not a private note), and whether it breached. `breached` turns true once, by
    a conditional UPDATE that also records the one `chat.sla_breached` event (routing.sla)."""

    chat = models.OneToOneField("conversations.Chat", on_delete=models.CASCADE, primary_key=True, related_name="sla")
    policy = models.ForeignKey(SlaPolicy, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    first_response_due_at = models.DateTimeField(null=True, blank=True, help_text="None: the team's hours never open.")
    resolution_due_at = models.DateTimeField(null=True, blank=True)
    first_response_at = models.DateTimeField(null=True, blank=True)
    breached = models.BooleanField(default=False)
    breached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The breach check and its next due time: only chats that can still breach are indexed.
            models.Index(fields=["first_response_due_at"], name="chatsla_first_due_idx", condition=models.Q(breached=False)),
            models.Index(fields=["resolution_due_at"], name="chatsla_resolution_due_idx", condition=models.Q(breached=False)),
        ]
