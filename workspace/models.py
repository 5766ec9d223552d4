from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower

from conversations.models import Chat
from core.models import TimestampedModel

COLOR_PATTERN = r"\A#[0-9a-fA-F]{6}\Z"


class Label(TimestampedModel):
    """A tag staff put on chats ("billing", "vip"); the inbox filters by it. Names are unique in the tenant
    whatever their case: "VIP" and "vip" would be one label to a person."""

    name = models.CharField(max_length=64)
    color = models.CharField(max_length=7, default="#1f93ff", validators=[RegexValidator(COLOR_PATTERN)])

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(Lower("name"), name="label_name_unique_ignoring_case")]

    def __str__(self) -> str:
        return self.name


class ChatLabel(models.Model):
    """A label on a chat. The pair is unique, so adding a label twice (two agents at once) adds it once."""

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="chat_labels")
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="chat_labels")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["chat", "label"], name="chat_label_unique")]
        indexes = [
            # `/api/chats?label=`: the chats of one label (the unique index above serves a chat's labels).
            models.Index(fields=["label", "chat"], name="chat_label_by_label_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.chat_id}:{self.label_id}"


class CannedResponse(TimestampedModel):
    """A reply saved under a shortcut (`/hello`), with placeholders filled when it is sent: `{{customer_id}}`
    and `{{agent_name}}` (workspace.services.canned_response_render)."""

    shortcut = models.CharField(max_length=64, unique=True)
    body = models.TextField()

    class Meta:
        ordering = ["shortcut"]

    def __str__(self) -> str:
        return self.shortcut
