"""Who is acting: the signed-in user of the request being served, read by the audit log (audit.services).

Set once per request by `core.middleware.ActorMiddleware`, which keeps the request in a context variable; the
user is read from it only when asked, so DRF's token authentication (which runs inside the view and sets the
Django request's `user` too) and the admin's session both count, and services keep their signatures. Work
without a request (a Celery task, a management command) has no actor: the audit log calls it "system".
"""

from contextlib import contextmanager
from contextvars import ContextVar

_request: ContextVar = ContextVar("sociomile_request", default=None)


@contextmanager
def actor_request_bind(request):
    """Makes `request`'s user the actor of everything done inside the block (reset after it: a worker thread
    serves the next request with a clean context)."""
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)


def actor_current():
    """The signed-in user acting now, or None (no request, or an anonymous one: a client API call, a signed
    channel webhook, an integration)."""
    request = _request.get()
    if request is None:
        return None
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user
