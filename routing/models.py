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
