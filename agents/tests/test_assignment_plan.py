"""The assignment engine's round planning (`assignment_round_plan`): the rules of PRODUCT.md, with no database."""

from datetime import UTC, datetime, timedelta

from agents.hooks import ChatAssigned
from agents.services import assignment_pool, assignment_round_plan

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def _head(*chat_ids: int, application_id: int = 7) -> list[tuple[int, int, datetime]]:
    return [(chat_id, application_id, T0 - timedelta(minutes=1)) for chat_id in chat_ids]


def test_the_least_busy_agent_wins_then_the_longest_unassigned_then_the_lowest_id():
    # given agents (id, max, last assigned, active): 3 has the fewest chats; 1 and 2 tie on chats, 2 was
    # never assigned; 4 and 5 are never assigned and idle too, 4 has the lower id; 6 is full
    pool = assignment_pool(
        [
            (1, 5, T0 - timedelta(hours=1), 1),
            (2, 5, None, 1),
            (3, 5, T0 - timedelta(minutes=1), 0),
            (5, 5, None, 0),
            (4, 5, None, 0),
            (6, 1, None, 1),
        ]
    )

    # when five chats are planned
    plan = assignment_round_plan(pool=pool, head=_head(10, 11, 12, 13, 14), avoid={}, at=T0)

    # then the idle never-assigned agents first (lowest id first), then 3 (idle, assigned before), then the
    # busier ones: 2 (never assigned) before 1; the full agent gets nothing
    assert plan.agent_ids == [4, 5, 3, 2, 1]
    assert plan.chat_ids == [10, 11, 12, 13, 14]
    assert plan.added == {4: 1, 5: 1, 3: 1, 2: 1, 1: 1}


def test_each_assignment_gets_its_own_microsecond_never_before_its_chat_was_created():
    pool = assignment_pool([(1, 3, None, 0)])
    late = T0 + timedelta(seconds=5)  # a chat stamped by a clock running ahead

    plan = assignment_round_plan(
        pool=pool, head=[(10, 7, T0 - timedelta(minutes=1)), (11, 7, late), (12, 7, T0)], avoid={}, at=T0
    )

    assert plan.times == [T0 + US, late, late + US]
    assert plan.last_touch == {1: late + US}
    assert plan.added == {1: 3}


def test_an_agent_gets_chats_up_to_its_free_slots_and_the_pool_carries_over_to_the_next_round():
    pool = assignment_pool([(1, 2, None, 0), (2, 1, None, 0)])

    first = assignment_round_plan(pool=pool, head=_head(10, 11), avoid={}, at=T0)
    second = assignment_round_plan(pool=pool, head=_head(12, 13), avoid={}, at=first.times[-1])

    assert list(zip(first.chat_ids, first.agent_ids)) == [(10, 1), (11, 2)]
    # agent 1 has one slot left, agent 2 none: chat 13 waits
    assert list(zip(second.chat_ids, second.agent_ids)) == [(12, 1)]
    assert not pool and pool.capacity() == 0


def test_a_chat_passes_over_the_agent_it_timed_out_with_unless_no_other_is_eligible():
    pool = assignment_pool([(1, 5, None, 0), (2, 5, None, 3)])

    plan = assignment_round_plan(pool=pool, head=_head(10), avoid={10: 1}, at=T0)
    assert plan.agent_ids == [2]

    alone = assignment_pool([(1, 5, None, 0)])
    plan = assignment_round_plan(pool=alone, head=_head(10), avoid={10: 1}, at=T0)
    assert plan.agent_ids == [1]


def test_the_plan_names_each_chat_assigned_for_the_listeners():
    pool = assignment_pool([(1, 5, None, 0)])

    plan = assignment_round_plan(pool=pool, head=[(10, 7, T0), (11, 8, T0)], avoid={}, at=T0)

    # with each chat's arrival and assignment (a microsecond apart, in order of service)
    assert plan.assigned == [
        ChatAssigned(10, 1, 7, T0, T0 + timedelta(microseconds=1)),
        ChatAssigned(11, 1, 8, T0, T0 + timedelta(microseconds=2)),
    ]


def test_no_pool_plans_nothing():
    plan = assignment_round_plan(pool=assignment_pool([(1, 2, None, 2)]), head=_head(10), avoid={}, at=T0)

    assert (plan.chat_ids, plan.agent_ids, plan.times, plan.assigned) == ([], [], [], [])


# --- teams (routing, issue 24) ---------------------------------------------------------------------------------


def test_a_routed_chat_goes_only_to_its_team_and_an_unrouted_one_to_anyone():
    # given agent 1 in team 100, agent 2 in no team, both idle; agent 2 has the lower tie-break (never assigned)
    pool = assignment_pool([(1, 5, T0 - timedelta(hours=1), 0), (2, 5, None, 0)], teams={100: [1]})

    # when chat 10 (team 100) and chat 11 (no team) are planned
    plan = assignment_round_plan(pool=pool, head=_head(10, 11), avoid={}, at=T0, teams={10: 100})

    # then chat 10 goes to agent 1 although agent 2 ranks first, and chat 11 to the best of all: agent 2
    assert list(zip(plan.chat_ids, plan.agent_ids)) == [(10, 1), (11, 2)]


def test_a_full_team_passes_over_its_chats_fifo_while_other_chats_are_served():
    # given team 100 with agent 1 (room for one), team 200 with agent 2 (room for two)
    pool = assignment_pool([(1, 1, None, 0), (2, 2, None, 0)], teams={100: [1], 200: [2]})

    # when, oldest first: 10 (100), 11 (100), 12 (200), 13 (100), 14 (200)
    plan = assignment_round_plan(
        pool=pool, head=_head(10, 11, 12, 13, 14), avoid={}, at=T0, teams={10: 100, 11: 100, 12: 200, 13: 100, 14: 200}
    )

    # then team 100's head (10) is served and its later chats wait; team 200's chats are served in order
    assert list(zip(plan.chat_ids, plan.agent_ids)) == [(10, 1), (12, 2), (14, 2)]
    assert not pool


def test_an_agent_in_several_teams_is_counted_once_against_its_max_customers():
    # given agent 1 in teams 100 and 200 with room for two, and nobody else
    pool = assignment_pool([(1, 2, None, 0)], teams={100: [1], 200: [1]})

    # when three chats, one of each team and one unrouted, are planned
    plan = assignment_round_plan(pool=pool, head=_head(10, 11, 12), avoid={}, at=T0, teams={10: 100, 11: 200})

    # then it gets two of them, whichever heap picked it
    assert plan.agent_ids == [1, 1]
    assert plan.chat_ids == [10, 11]
    assert plan.added == {1: 2}
    assert pool.teams_with_room() == []


def test_a_team_that_is_not_open_has_no_agents_and_a_team_member_still_serves_unrouted_chats():
    # given agent 1 in team 100 (closed now: not in `teams`) and team 200 (open, no members)
    pool = assignment_pool([(1, 2, None, 0)], teams={200: []})

    plan = assignment_round_plan(pool=pool, head=_head(10, 11, 12), avoid={}, at=T0, teams={10: 100, 11: 200})

    assert list(zip(plan.chat_ids, plan.agent_ids)) == [(12, 1)]
    assert pool.teams_with_room() == []
