import json

from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.apis import _message_body
from conversations.selectors import application_ref_get
from conversations.services import message_create

from sociomile.urls_tenants import handler404, handler500, urlpatterns as tenant_urlpatterns  # noqa: F401


def ping(request):
    """The cheapest endpoint of the same server: tenant middleware, routing, a JSON body; no database."""
    return JsonResponse({"pong": True})


class DrfFloorApi(APIView):
    """A create with nothing to do: the message create's DRF view (the project's authentication, negotiation,
    AllowAny, the JSON body parsed, a 202 rendered) without the application lookup, the number or the queue.
    What any DRF view of that shape costs on this server: the ceiling of the create's ratio to the ping."""

    permission_classes = [AllowAny]

    def post(self, request):
        return Response({"chat_number": 1, "number": len(request.data["body"])}, status=status.HTTP_202_ACCEPTED)


@csrf_exempt
@require_POST
def plain_create(request, token: str, number: int):
    """The customer's message create without DRF: the create's own work (the application from the routing cache,
    the body checked as the API checks it, the number allocated and the record queued, a 202) in a plain Django
    view like the ping. What the create would reach if the API gave up DRF; not a route of the product."""
    application = application_ref_get(token=token)
    if application is None:
        return JsonResponse({"detail": "No application with this token."}, status=404)
    message_number = message_create(application=application, chat_number=number, body=_message_body(json.loads(request.body)))
    if message_number is None:
        return JsonResponse({"detail": "No chat with this number."}, status=404)
    return JsonResponse({"chat_number": number, "number": message_number}, status=202)


urlpatterns = [
    path("bench/ping", ping),
    path("bench/drf-floor", DrfFloorApi.as_view()),
    path("bench/plain-create/<str:token>/<int:number>", plain_create),
    *tenant_urlpatterns,
]
