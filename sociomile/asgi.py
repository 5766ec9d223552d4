"""The ASGI application: the real-time stream (`GET /api/stream`, a Django async view) under uvicorn, beside the
WSGI process that serves everything else (sociomile/wsgi.py). The same settings, middleware and host routing:
the tenant comes from the Host header exactly as on the WSGI side. Only /api/stream needs routing here
(docs/stream.md)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sociomile.settings.local")

application = get_asgi_application()
