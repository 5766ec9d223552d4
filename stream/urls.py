from django.urls import path

from stream.apis import StreamTicketCreateApi, stream_api

urlpatterns = [
    path("stream/ticket", StreamTicketCreateApi.as_view(), name="stream-ticket"),
    path("stream", stream_api, name="stream"),
]
