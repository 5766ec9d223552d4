from django.http import JsonResponse
from django.urls import path
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

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


urlpatterns = [path("bench/ping", ping), path("bench/drf-floor", DrfFloorApi.as_view()), *tenant_urlpatterns]
