"""Redis records an integration keeps per customer, which an erasure and an export must find.

The core never imports an integration (agents/hooks.py, STYLE.md): an integration that keeps a record per
customer registers a function here from its AppConfig.ready() returning that record's key for a customer id
in the current tenant (integrations/qiscus/apps.py: the room's queued chat).
"""

from collections.abc import Callable

CustomerKeys = Callable[[str], list[str]]

_customer_key_providers: list[CustomerKeys] = []


def customer_keys_register(provider: CustomerKeys) -> None:
    """Registers `provider` (once, however often this is called: ready() may run twice in tests)."""
    if provider not in _customer_key_providers:
        _customer_key_providers.append(provider)


def customer_keys(customer_id: str) -> list[str]:
    """Every registered integration's keys for this customer, in the current tenant."""
    return [key for provider in _customer_key_providers for key in provider(customer_id)]
