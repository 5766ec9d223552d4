import csv
import io
from datetime import timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import exceptions, renderers, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.permissions import IsTenantAdmin
from reports.selectors import COUNTS, DURATIONS, GROUP_BY, RangeError, ReportRange, ReportsPending, report_summary

# Longest range one summary covers (both ends included): a year and a day, so a leap year's "same day last
# year" fits. Beyond it a summary would read a year of rollups for one answer; ask for several.
MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 7
# Dates the rollups can answer for: every IANA zone's offset since 2000 is a multiple of 15 minutes (the
# bucket), and the far end keeps `until + 1 day` representable.
EARLIEST_DATE_YEAR, LATEST_DATE_YEAR = 2000, 2999


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    # Checked against this list before ZoneInfo() is called: ZoneInfo would otherwise try to open any
    # string as a file under the zone directory.
    return frozenset(available_timezones())


class ReportCsvRenderer(renderers.BaseRenderer):
    """`Accept: text/csv`: the summary's rows, one line each, durations flattened to `<figure>_median` and
    `<figure>_p90` columns. The totals are not a row (they are in the JSON answer)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    COLUMNS = [
        "key",
        *COUNTS.values(),
        *(f"{name}_{stat}" for name in DURATIONS.values() for stat in ("median", "p90")),
        "sla_breaches",
    ]

    def render(self, data, accepted_media_type=None, renderer_context=None):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.COLUMNS)
        for row in data["data"]:
            flat = dict(row)
            for name in DURATIONS.values():
                flat[f"{name}_median"], flat[f"{name}_p90"] = row[name]["median"], row[name]["p90"]
            writer.writerow(["" if flat[column] is None else flat[column] for column in self.COLUMNS])
        return out.getvalue().encode(self.charset)


class ReportsUnavailable(exceptions.APIException):
    """503 with Retry-After while the tenant's rollups are being backfilled (docs/reports.md): a figure
    counted from part of the chats would look exact and be wrong."""

    status_code = 503
    default_detail = "The reports of this tenant are being built from its existing chats; try again later."
    default_code = "reports_backfill_running"

    def __init__(self):
        super().__init__()
        self.wait = settings.REPORTS_BACKFILL_RETRY_AFTER_SECONDS  # DRF's handler answers it as Retry-After


@extend_schema_serializer(component_name="ReportDurations")
class DurationsSerializer(serializers.Serializer):
    median = serializers.IntegerField(allow_null=True)
    p90 = serializers.IntegerField(allow_null=True)


@extend_schema_serializer(component_name="ReportTotals")
class ReportTotalsSerializer(serializers.Serializer):
    chats_created = serializers.IntegerField()
    chats_resolved = serializers.IntegerField()
    messages = serializers.IntegerField()
    first_response_seconds = DurationsSerializer()
    wait_seconds = DurationsSerializer()
    resolution_seconds = DurationsSerializer()
    sla_breaches = serializers.IntegerField()


@extend_schema_serializer(component_name="ReportRow")
class ReportRowSerializer(ReportTotalsSerializer):
    key = serializers.JSONField(help_text="The day (YYYY-MM-DD), the agent's id (null: none) or the application's token.")


@extend_schema_serializer(component_name="ReportSummary")
class ReportSummarySerializer(serializers.Serializer):
    data = ReportRowSerializer(many=True)
    totals = ReportTotalsSerializer()


class ReportSummaryApi(APIView):
    """Chats, messages and exact median / p90 durations over a range of days in a time zone (docs/reports.md)."""

    permission_classes = [IsTenantAdmin]
    renderer_classes = [renderers.JSONRenderer, ReportCsvRenderer]

    @extend_schema_serializer(component_name="ReportSummaryQuery")
    class FilterSerializer(serializers.Serializer):
        since = serializers.DateField(required=False, help_text="First day (ISO date, in `tz`). Default: 6 days before `until`.")
        until = serializers.DateField(required=False, help_text="Last day, included (ISO date, in `tz`). Default: today.")
        group_by = serializers.ChoiceField(choices=GROUP_BY, required=False, default="day")
        tz = serializers.CharField(required=False, default="UTC", max_length=64, help_text="An IANA time zone.")

        def validate_tz(self, value: str) -> ZoneInfo:
            if value not in _time_zones():
                raise serializers.ValidationError("Unknown time zone: give an IANA name such as Asia/Jakarta.")
            return ZoneInfo(value)

        def validate(self, attrs):
            tz = attrs["tz"]
            # The given dates first: a default computed from an out-of-range one could overflow (year 1).
            for name in ("since", "until"):
                day = attrs.get(name)
                if day is not None and not EARLIEST_DATE_YEAR <= day.year <= LATEST_DATE_YEAR:
                    raise serializers.ValidationError({name: [f"Must be between {EARLIEST_DATE_YEAR} and {LATEST_DATE_YEAR}."]})
            until = attrs.get("until") or timezone.now().astimezone(tz).date()
            since = attrs.get("since") or until - timedelta(days=DEFAULT_RANGE_DAYS - 1)
            if since.year < EARLIEST_DATE_YEAR:
                raise serializers.ValidationError({"since": [f"Must be between {EARLIEST_DATE_YEAR} and {LATEST_DATE_YEAR}."]})
            if since > until:
                raise serializers.ValidationError({"since": ["Must not be after until."]})
            if (until - since).days + 1 > MAX_RANGE_DAYS:
                raise serializers.ValidationError({"since": [f"The range may cover at most {MAX_RANGE_DAYS} days."]})
            return {"report_range": ReportRange(since=since, until=until, tz=tz), "group_by": attrs["group_by"]}

    def handle_exception(self, exc):
        # Errors are JSON whatever the client accepts (a CSV client gets a readable 4xx, not a broken CSV).
        self.request.accepted_renderer = renderers.JSONRenderer()
        self.request.accepted_media_type = renderers.JSONRenderer.media_type
        return super().handle_exception(exc)

    @extend_schema(
        parameters=[FilterSerializer],
        responses={(200, "application/json"): ReportSummarySerializer, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        try:
            summary = report_summary(**filters.validated_data)
        except RangeError as error:
            raise serializers.ValidationError({"tz": [str(error)]}) from error
        except ReportsPending as error:
            raise ReportsUnavailable from error
        return Response(summary)
