"""The real-time stream's endpoints: the ticket (a DRF view, served by the WSGI process) and the stream itself
(a Django async view, served by the ASGI process: sociomile/asgi.py, docs/stream.md)."""

import asyncio

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import JsonResponse, StreamingHttpResponse
from django_tenants.utils import schema_context
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.models import User
from core.permissions import IsTenantStaff
from stream.fanout import StreamConnection, sse_frame_of, stream_hub
from stream.selectors import stream_last_event_get, stream_replay_page
from stream.services import StreamViewer, stream_ticket_consume, stream_ticket_create


class StreamTicketCreateApi(APIView):
    """A single-use ticket (60 s) to open `GET /api/stream?ticket=` (an EventSource sends no Authorization)."""

    permission_classes = [IsTenantStaff]

    class OutputSerializer(serializers.Serializer):
        ticket = serializers.CharField()
        expires_at = serializers.DateTimeField()

    @extend_schema(request=None, responses={201: OutputSerializer})
    def post(self, request):
        ticket = stream_ticket_create(user=request.user)
        return Response(self.OutputSerializer(ticket).data, status=status.HTTP_201_CREATED)


def _error(status_code: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status_code)


def _stream_open(schema_name: str, ticket: str, last_event_id: str | None) -> tuple[StreamViewer | None, int | None, JsonResponse | None]:
    """The ticket's viewer (consumed), and the outbox id to replay after: (viewer, after id, None), or an error.
    Runs in a worker thread (Redis and PostgreSQL calls block)."""
    close_old_connections()
    if not ticket:
        return None, None, _error(401, "A ticket is required: POST /api/stream/ticket, then GET /api/stream?ticket=<ticket>.")
    viewer = stream_ticket_consume(schema_name=schema_name, ticket=ticket)
    if viewer is None:
        return None, None, _error(401, "This ticket is unknown, used or expired: tickets open one stream, within 60 s, on their own tenant's host.")
    with schema_context(schema_name):
        # The ticket is a minute old at most, but the user may have been deactivated or demoted meanwhile.
        user = User.objects.filter(pk=viewer.user_id, is_active=True).only("role").first()
        if user is None or not user.is_tenant_staff:
            return None, None, _error(403, "Only this tenant's active admins and agents may open the stream.")
        viewer = StreamViewer(user_id=user.pk, role=user.role)
        after_id = None
        if last_event_id is not None:
            event = stream_last_event_get(last_event_id=last_event_id)
            if event is None:
                return None, None, _error(400, "Last-Event-ID is not an event of this tenant within the last 24 h: "
                                               "reload the state from the API and connect without it.")  # fmt: skip
            after_id = event.id
    return viewer, after_id, None


def _replay_page(schema_name: str, viewer: StreamViewer, after_id: int) -> list[tuple[int, bytes]]:
    close_old_connections()
    with schema_context(schema_name):
        events = stream_replay_page(viewer=viewer, after_id=after_id, limit=settings.STREAM_REPLAY_BATCH)
        return [(event.id, sse_frame_of(event)) for event in events]


async def stream_api(request):
    """`GET /api/stream?ticket=` (PRODUCT.md "Real-time stream"): Server-Sent Events of the tenant's events the
    ticket's viewer may see; `Last-Event-ID` (header, or `last_event_id` in the query string for a new
    EventSource) replays what came after that event first (docs/stream.md)."""
    if request.method != "GET":
        return _error(405, f'Method "{request.method}" not allowed.')
    if not isinstance(request, ASGIRequest):
        # Under WSGI an endless response would hold a web thread for its whole life.
        return _error(404, "The stream is served by the ASGI process: route /api/stream to it (docs/stream.md).")
    hub = stream_hub()
    if not await hub.ensure_subscribed():  # before the ticket is spent
        return JsonResponse({"detail": "The stream is unavailable; retry shortly."}, status=503, headers={"Retry-After": "2"})
    schema_name = request.tenant.schema_name
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or None
    viewer, after_id, error = await sync_to_async(_stream_open, thread_sensitive=False)(
        schema_name, request.GET.get("ticket", ""), last_event_id
    )
    if error is not None:
        return error
    connection = StreamConnection(schema_name=schema_name, viewer=viewer)
    response = StreamingHttpResponse(_frames(hub, connection, after_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each frame on at once
    return response


async def _frames(hub, connection: StreamConnection, after_id: int | None):
    # Subscribed and registered before the replay reads the outbox: an event committed meanwhile is queued, and
    # dropped if the replay sent it. No gap and no duplicate at the switch. Registered here, not in the view,
    # so that the `finally` below always unregisters it (a response never iterated never registers). The tenant's
    # listening mark first: commits from then on publish their notices (stream.services).
    await hub.listening(connection.schema_name)
    hub.register(connection)
    try:
        yield b": connected\n\n"
        if after_id is not None:
            replayed: set[int] = set()
            while True:
                page = await sync_to_async(_replay_page, thread_sensitive=False)(
                    connection.schema_name, connection.viewer, after_id
                )
                if page:
                    yield b"".join(frame for _event_id, frame in page)
                    replayed.update(event_id for event_id, _frame in page)
                    after_id = page[-1][0]
                if len(page) < settings.STREAM_REPLAY_BATCH:
                    break
            connection.replay_done(replayed)
        while True:
            try:
                await asyncio.wait_for(connection.wake.wait(), settings.STREAM_HEARTBEAT_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            connection.wake.clear()
            if connection.is_overflowed:
                return
            if connection.pending:
                frames = b"".join(frame for _event_id, frame in connection.pending)
                connection.pending.clear()
                yield frames
    finally:
        hub.unregister(connection)
