"""Teams (admin writes, staff reads) and the chat transfer (the assigned agent or an admin)."""

import re
from datetime import date
from zoneinfo import available_timezones

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from agents.services import STAFF_ROLES, agent_for_user
from conversations.apis import ChatOutputSerializer
from conversations.models import Chat
from conversations.selectors import application_ref_get, chat_get
from core.models import User
from core.openapi import ERROR_RESPONSE
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin, IsTenantStaff
from core.serializers import NameField, StrictSerializer
from conversations.models import Application
from routing.models import SlaPolicy, Team
from routing.selectors import sla_policy_get, sla_policy_list, team_get, team_list
from routing.services import (
    application_team_set,
    chat_transfer,
    sla_policy_create,
    sla_policy_delete,
    sla_policy_update,
    team_create,
    team_delete,
    team_update,
)

_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
AWAY_MESSAGE_MAX_LENGTH = 2000


# --- business hours ------------------------------------------------------------------------------------------


class _NestedStrictSerializer(serializers.Serializer):
    """StrictSerializer's rule for a nested object (which has no `initial_data` of its own): unknown keys are
    refused, not ignored."""

    refuses_unknown_fields = True

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError({field: ["Unknown field."] for field in sorted(unknown)})
        return super().to_internal_value(data)


@extend_schema_serializer(component_name="BusinessHoursWindow")
class WindowSerializer(_NestedStrictSerializer):
    day = serializers.IntegerField(min_value=0, max_value=6, help_text="0 = Monday ... 6 = Sunday")
    open = serializers.RegexField(_CLOCK.pattern, help_text="HH:MM, the team's wall clock")
    close = serializers.RegexField(r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", help_text="HH:MM after open; 24:00 = midnight")

    def validate(self, attrs):
        if attrs["close"] != "24:00" and attrs["close"] <= attrs["open"]:
            raise serializers.ValidationError({"close": ["Must be after open."]})
        return attrs


@extend_schema_serializer(component_name="BusinessHours")
class BusinessHoursSerializer(_NestedStrictSerializer):
    timezone = serializers.ChoiceField(choices=sorted(available_timezones()), help_text="An IANA time zone, e.g. Asia/Jakarta")
    weekly = serializers.ListField(child=WindowSerializer(), max_length=70)
    holidays = serializers.ListField(child=serializers.DateField(), max_length=1000, required=False, default=list)

    def validate_weekly(self, value: list[dict]) -> list[dict]:
        # Windows of one day must not overlap: business time would count the overlap twice.
        by_day: dict[int, list[tuple[str, str]]] = {}
        for window in value:
            by_day.setdefault(window["day"], []).append((window["open"], window["close"]))
        for windows in by_day.values():
            windows.sort()
            for (_, close), (open_, _) in zip(windows, windows[1:]):
                if open_ < close:
                    raise serializers.ValidationError("Windows of the same day overlap.")
        return value

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # Stored as JSON: dates as "YYYY-MM-DD", each once, in order.
        value["holidays"] = sorted({day.isoformat() for day in value.get("holidays", []) if isinstance(day, date)})
        return value


# --- teams ---------------------------------------------------------------------------------------------------


@extend_schema_serializer(component_name="Team")
class TeamOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    agents = serializers.SerializerMethodField()
    business_hours = BusinessHoursSerializer(allow_null=True)
    away_message = serializers.CharField()

    def get_agents(self, team: Team) -> list[int]:
        return sorted(agent.pk for agent in team.agents.all())


def _agents_of(ids: list[int]) -> list[Agent]:
    """The agents named by id; any id that is no staff user of this tenant is a 400."""
    ids = list(dict.fromkeys(ids))
    users = {user.id: user for user in User.objects.filter(id__in=ids, role__in=STAFF_ROLES)}
    missing = [agent_id for agent_id in ids if agent_id not in users]
    if missing:
        raise serializers.ValidationError({"agents": [f"No agent with id {missing[0]}."]})
    return [agent_for_user(user=users[agent_id]) for agent_id in ids]


def _team_or_404(team_id: int) -> Team:
    team = team_get(team_id=team_id)
    if team is None:
        raise Http404("No team with this id.")
    return team


class TeamListCreateApi(APIView):
    pagination_class = CursorPagination

    @extend_schema_serializer(component_name="TeamCreate")
    class InputSerializer(StrictSerializer):
        name = NameField(min_length=1, max_length=255)
        agents = serializers.ListField(child=serializers.IntegerField(min_value=1), max_length=1000, required=False, default=list)
        business_hours = BusinessHoursSerializer(allow_null=True, required=False, default=None)
        away_message = serializers.CharField(max_length=AWAY_MESSAGE_MAX_LENGTH, allow_blank=True, required=False, default="")

    def get_permissions(self):
        return [IsTenantAdmin()] if self.request.method == "POST" else [IsTenantStaff()]

    @extend_schema(responses={200: TeamOutputSerializer(many=True)})
    def get(self, request):
        return paginate(request=request, view=self, queryset=team_list(), serializer_class=TeamOutputSerializer, ordering=("id",))

    @extend_schema(request=InputSerializer, responses={201: TeamOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = team_create(
            name=data["name"],
            agents=_agents_of(data["agents"]),
            business_hours=data["business_hours"],
            away_message=data["away_message"],
        )
        return Response(TeamOutputSerializer(team_get(team_id=team.id)).data, status=status.HTTP_201_CREATED)


class TeamDetailApi(APIView):
    @extend_schema_serializer(component_name="TeamUpdate")
    class InputSerializer(StrictSerializer):
        name = NameField(min_length=1, max_length=255, required=False)
        agents = serializers.ListField(child=serializers.IntegerField(min_value=1), max_length=1000, required=False)
        business_hours = BusinessHoursSerializer(allow_null=True, required=False)
        away_message = serializers.CharField(max_length=AWAY_MESSAGE_MAX_LENGTH, allow_blank=True, required=False)

    def get_permissions(self):
        return [IsTenantStaff()] if self.request.method == "GET" else [IsTenantAdmin()]

    @extend_schema(responses={200: TeamOutputSerializer})
    def get(self, request, team_id: int):
        return Response(TeamOutputSerializer(_team_or_404(team_id)).data)

    @extend_schema(request=InputSerializer, responses={200: TeamOutputSerializer})
    def patch(self, request, team_id: int):
        team = _team_or_404(team_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if "agents" in changes:
            changes["agents"] = _agents_of(changes["agents"])
        team_update(team=team, **changes)
        return Response(TeamOutputSerializer(team_get(team_id=team.id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, team_id: int):
        team_delete(team=_team_or_404(team_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- transfer (path under /api/applications/{token}/chats/{n}/) -------------------------------------------


def _chat_or_404(token: str, number: int) -> Chat:
    application = application_ref_get(token=token)
    chat = chat_get(application=application, number=number) if application is not None else None
    if chat is None:
        raise Http404("No chat with this number.")
    return chat


class ChatTransferApi(APIView):
    """The assigned agent or an admin moves a chat to another agent (online, with room, in the chat's team if
    it is routed: 409 / 400 as the assign endpoint answers) or back to a team's queue at its original place;
    `note` is kept as a private note on the chat."""

    permission_classes = [IsTenantStaff]

    @extend_schema_serializer(component_name="ChatTransfer")
    class InputSerializer(StrictSerializer):
        agent_id = serializers.IntegerField(min_value=1, required=False)
        team_id = serializers.IntegerField(min_value=1, required=False)
        note = serializers.CharField(max_length=settings.MESSAGE_MAX_LENGTH, allow_blank=True, required=False, default="", trim_whitespace=False)

        def validate(self, attrs):
            attrs = super().validate(attrs)
            if ("agent_id" in attrs) == ("team_id" in attrs):
                raise serializers.ValidationError({"non_field_errors": ["Give exactly one of agent_id and team_id."]})
            return attrs

    @extend_schema(request=InputSerializer, responses={200: ChatOutputSerializer, 409: ERROR_RESPONSE})
    def post(self, request, token: str, number: int):
        chat = _chat_or_404(token, number)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        agent = team = None
        if "agent_id" in data:
            user = User.objects.filter(id=data["agent_id"], role__in=STAFF_ROLES).first()
            if user is None:
                raise serializers.ValidationError({"agent_id": ["No agent with this id."]})
            agent = agent_for_user(user=user)
        else:
            team = team_get(team_id=data["team_id"])
            if team is None:
                raise serializers.ValidationError({"team_id": ["No team with this id."]})
        chat = chat_transfer(chat=chat, by=request.user, agent=agent, team=team, note=data["note"].strip() and data["note"])
        return Response(ChatOutputSerializer(chat).data)


# --- an application's team (PATCH /api/applications/{token} {"team"}, conversations.apis) ------------------


def application_team_route(*, application, team_id: int | None) -> None:
    """Routes the application to the team `team_id` (None: to any agent); an unknown id is a 400."""
    team = None
    if team_id is not None:
        team = team_get(team_id=team_id)
        if team is None:
            raise serializers.ValidationError({"team": ["No team with this id."]})
    application_team_set(application=application, team=team)


# --- SLA policies (admin writes, staff reads) -----------------------------------------------------------------

# A day's worth of seconds times a year: targets beyond are input errors, and business time over a longer span
# would walk years of windows.
SLA_SECONDS_MAX = 366 * 86400


@extend_schema_serializer(component_name="SlaPolicy")
class SlaPolicyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    first_response_seconds = serializers.IntegerField()
    resolution_seconds = serializers.IntegerField()
    applications = serializers.SerializerMethodField()

    def get_applications(self, policy: SlaPolicy) -> list[str]:
        return sorted(link.application.token for link in policy.application_links.all())


def _applications_of(tokens: list[str]) -> list[Application]:
    tokens = list(dict.fromkeys(tokens))
    found = {application.token: application for application in Application.objects.filter(token__in=tokens)}
    missing = [token for token in tokens if token not in found]
    if missing:
        raise serializers.ValidationError({"applications": [f"No application with token {missing[0]}."]})
    return [found[token] for token in tokens]


def _policy_or_404(policy_id: int) -> SlaPolicy:
    policy = sla_policy_get(policy_id=policy_id)
    if policy is None:
        raise Http404("No SLA policy with this id.")
    return policy


class _SlaPolicyFields(StrictSerializer):
    name = NameField(min_length=1, max_length=255)
    first_response_seconds = serializers.IntegerField(min_value=1, max_value=SLA_SECONDS_MAX)
    resolution_seconds = serializers.IntegerField(min_value=1, max_value=SLA_SECONDS_MAX)
    applications = serializers.ListField(child=serializers.CharField(max_length=64), max_length=1000, required=False, default=list)


class SlaPolicyListCreateApi(APIView):
    pagination_class = CursorPagination

    @extend_schema_serializer(component_name="SlaPolicyCreate")
    class InputSerializer(_SlaPolicyFields):
        pass

    def get_permissions(self):
        return [IsTenantAdmin()] if self.request.method == "POST" else [IsTenantStaff()]

    @extend_schema(responses={200: SlaPolicyOutputSerializer(many=True)})
    def get(self, request):
        return paginate(request=request, view=self, queryset=sla_policy_list(), serializer_class=SlaPolicyOutputSerializer, ordering=("id",))

    @extend_schema(request=InputSerializer, responses={201: SlaPolicyOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data["applications"] = _applications_of(data["applications"])
        policy = sla_policy_create(**data)
        return Response(SlaPolicyOutputSerializer(sla_policy_get(policy_id=policy.id)).data, status=status.HTTP_201_CREATED)


class SlaPolicyDetailApi(APIView):
    @extend_schema_serializer(component_name="SlaPolicyUpdate")
    class InputSerializer(_SlaPolicyFields):
        """Read with partial=True: every field optional, no defaults applied."""

    def get_permissions(self):
        return [IsTenantStaff()] if self.request.method == "GET" else [IsTenantAdmin()]

    @extend_schema(responses={200: SlaPolicyOutputSerializer})
    def get(self, request, policy_id: int):
        return Response(SlaPolicyOutputSerializer(_policy_or_404(policy_id)).data)

    @extend_schema(request=InputSerializer, responses={200: SlaPolicyOutputSerializer})
    def patch(self, request, policy_id: int):
        policy = _policy_or_404(policy_id)
        serializer = self.InputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if "applications" in changes:
            changes["applications"] = _applications_of(changes["applications"])
        sla_policy_update(policy=policy, **changes)
        return Response(SlaPolicyOutputSerializer(sla_policy_get(policy_id=policy.id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, policy_id: int):
        sla_policy_delete(policy=_policy_or_404(policy_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
