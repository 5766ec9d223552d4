"""The ASGI application: the real-time stream (`GET /api/stream`, a Django async view) under uvicorn, beside the
WSGI process that serves everything else (sociomile/wsgi.py). The same settings, middleware and host routing:
the tenant comes from the Host header exactly as on the WSGI side. Only /api/stream needs routing here
(docs/stream.md).

Our middleware is synchronous, so Django runs it, per request, in a "thread-sensitive" executor. By default
that executor is a new thread per request, living as long as the request, which for a stream means for hours:
2,000 streams held 2,000 parked threads (bench/README.md). Each request is instead given one of a few shared
single-thread executors. Its middleware still runs on one thread from start to end (what thread-sensitive
means: Django's database connection is per thread), and the thread is only busy while middleware runs.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sociomile.settings.local")

django_application = get_asgi_application()

# Requests' sync middleware runs on these, one request's calls at a time per thread, round robin.
_SYNC_THREADS = int(os.environ.get("ASGI_SYNC_THREADS", "4"))
_executors = cycle([ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"asgi-sync-{index}") for index in range(_SYNC_THREADS)])


async def application(scope, receive, send):
    if scope["type"] != "http":
        return await django_application(scope, receive, send)
    async with ThreadSensitiveContext(executor=next(_executors)):
        await django_application(scope, receive, send)
