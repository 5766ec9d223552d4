"""The agents app's services, one module per concern (HackSoft's styleguide: a module becomes a package past
~500 lines). `from agents.services import X` keeps working for every public name:

- `agents.py`: allocation settings, agent rows, who may change an agent, creating and editing agents;
- `schedule.py`: scheduling an assignment run after commit (`assignment_schedule`), a module of its own so
  that `agents.py` and `assignment.py` both call it without importing each other;
- `assignment.py`: the assignment engine (`assignment_run`, its pure round planning), resolve, manual
  assignment, the active-chats recount and the dispatcher's sweep.

A test that replaces a function must patch the module that calls it (`agents.services.assignment...`):
a name re-exported here is a second reference, not the one the code calls.
"""

from agents.services.agents import (  # noqa: F401
    STAFF_ROLES,
    agent_access_check,
    agent_create,
    agent_for_user,
    agent_set_online,
    agent_update,
    agents_ensure,
    allocation_settings_get,
)
from agents.services.schedule import (  # noqa: F401
    assignment_schedule,
    assignment_scheduled_clear,
)
from agents.services.assignment import (  # noqa: F401
    RoundPlan,
    agent_active_chats,
    agent_active_chats_reconcile,
    assignment_next_due_at,
    assignment_pool,
    assignment_round_plan,
    assignment_run,
    assignment_runs_deferred,
    assignment_sweep,
    assignment_work_settle,
    assignment_work_version,
    chat_assign,
    chat_resolve,
)
