"""Chat actions shared by the chats changelist and the waiting queue: resolve, and "assign to agent…"."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from agents.models import Agent
from agents.selectors import agent_list
from agents.services import chat_assign, chat_resolve
from core.exceptions import Conflict


class AgentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, agent):
        return f"{agent.user} ({agent.active_chats}/{agent.max_customers})"


class AssignForm(forms.Form):
    agent = AgentChoiceField(queryset=Agent.objects.none(), empty_label=None)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Online agents with room, the least busy first: the ones `chat_assign` accepts.
        candidates = [agent.pk for agent in agent_list().filter(is_online=True) if agent.active_chats < agent.max_customers]
        self.fields["agent"].queryset = agent_list().filter(pk__in=candidates).order_by("active_chats", "user__email")


def chats_assign(modeladmin, request, queryset, *, agent: Agent) -> None:
    """Assigns the selected chats to `agent` through the service, stopping (with a warning) at the first
    one it refuses (the agent went offline or is full), and reports how many were assigned."""
    done = 0
    for chat in queryset:
        try:
            chat_assign(chat=chat, agent=agent)
            done += 1
        except Conflict as error:
            modeladmin.message_user(request, f"Chat {chat.number}: {error}", messages.WARNING)
            break
    modeladmin.message_user(request, f"{done} chat(s) assigned to {agent.user}.", messages.SUCCESS)


class ChatActionsMixin:
    """Adds "resolve" and "assign to agent…" (an intermediate page choosing an online agent with room);
    both go through the agents services, which keep counters, the assignment history and Qiscus in step."""

    @admin.action(description="Resolve selected chats")
    def resolve_chats(self, request, queryset):
        done = skipped = 0
        for chat in queryset:
            try:
                chat_resolve(chat=chat, by=request.user)
                done += 1
            except Conflict:
                skipped += 1
        self.message_user(request, f"{done} chat(s) resolved.")
        if skipped:
            self.message_user(request, f"{skipped} chat(s) skipped: already resolved.", messages.WARNING)

    @admin.action(description="Assign selected chats to agent…")
    def assign_chats(self, request, queryset):
        form = AssignForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            chats_assign(self, request, queryset, agent=form.cleaned_data["agent"])
            return None  # back to the changelist
        return TemplateResponse(
            request,
            "admin/agents/assign_chats.html",
            {
                **self.admin_site.each_context(request),
                "title": "Assign chats to an agent",
                "opts": self.model._meta,
                "chats": queryset,
                "form": form,
                "no_agent": not form.fields["agent"].queryset.exists(),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )
