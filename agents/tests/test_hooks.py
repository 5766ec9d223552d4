"""agents/hooks.py: how the core tells integrations about assignments without importing them."""

from agents import hooks
from agents.hooks import ChatAssigned, chats_assigned_announce, chats_assigned_listen


def test_a_listener_registered_twice_hears_each_announcement_once(monkeypatch):
    monkeypatch.setattr(hooks, "_chats_assigned_listeners", [])
    heard = []
    chats_assigned_listen(heard.append)
    chats_assigned_listen(heard.append)  # an AppConfig.ready() run a second time

    chats_assigned_announce([ChatAssigned(1, 2, 3)])
    chats_assigned_announce([])  # nothing assigned: nothing said

    assert heard == [[ChatAssigned(1, 2, 3)]]


def test_the_qiscus_app_listens_from_start_up():
    from integrations.qiscus.services import qiscus_chats_assigned

    assert qiscus_chats_assigned in hooks._chats_assigned_listeners
