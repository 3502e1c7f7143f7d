"""The connector's scheduler-side plan: prefix matches, loads on the first step, saves as blocks fill."""

from __future__ import annotations

import hashlib

from kvcache.transfer_plan import BlockTransfer, ScheduledRequest, TransferPlanner

BS = 4


def chain(parent: bytes, tokens) -> bytes:
    return hashlib.sha256(parent + bytes(tokens)).digest()


def keys_of(tokens, root=b"ns") -> list[bytes]:
    keys, parent = [], root
    for i in range(len(tokens) // BS):
        parent = chain(parent, tokens[i * BS:(i + 1) * BS])
        keys.append(parent)
    return keys


def tail_of(tokens, root=b"ns") -> bytes:
    full = keys_of(tokens, root)
    return chain(full[-1] if full else root, tokens[len(full) * BS:])


def planner(stored: set[bytes]) -> TransferPlanner:
    def count_prefix(keys):
        n = 0
        while n < len(keys) and keys[n] in stored:
            n += 1
        return n

    return TransferPlanner(BS, chain, count_prefix, stored.__contains__)


def test_a_miss_saves_each_prompt_block_and_the_tail_once_computed():
    plan = planner(set())
    prompt = list(range(10))  # 2 full blocks + a tail of 2 tokens
    assert plan.match("r", b"ns", prompt, 0) == 0
    plan.allocated("r", 0)
    step = plan.plan_step([ScheduledRequest("r", prompt, len(prompt), 0, 10, [7, 8, 9])])
    assert step.loads == ()
    keys = keys_of(prompt)
    assert step.saves == (BlockTransfer(keys[0], 7), BlockTransfer(keys[1], 8), BlockTransfer(tail_of(prompt), 9))


def test_decode_saves_a_block_when_generation_fills_it():
    plan = planner(set())
    tokens = list(range(10))
    plan.match("r", b"ns", tokens, 0)
    plan.plan_step([ScheduledRequest("r", tokens, 10, 0, 10, [7, 8, 9])])
    tokens += [100, 101]  # two generated tokens; the KV of position 11 is computed in the following step
    assert plan.plan_step([ScheduledRequest("r", tokens, 10, 10, 1, [7, 8, 9])]).saves == ()
    step = plan.plan_step([ScheduledRequest("r", tokens, 10, 11, 1, [7, 8, 9])])
    assert step.saves == (BlockTransfer(keys_of(tokens)[2], 9),)


def test_a_hit_stops_one_token_short_of_the_prompt():
    prompt = list(range(8))  # exactly 2 blocks
    plan = planner(set(keys_of(prompt)))
    assert plan.match("r", b"ns", prompt, 0) == 7  # both blocks load; the last token is recomputed
    plan.allocated("r", 7)
    step = plan.plan_step([ScheduledRequest("r", prompt, 8, 7, 1, [5, 6])])
    assert [t.block_id for t in step.loads] == [5, 6] and step.saves == ()


def test_an_identical_prompt_loads_its_tail_block_too():
    prompt = list(range(11))  # 2 full blocks + a tail of 3
    plan = planner(set(keys_of(prompt)) | {tail_of(prompt)})
    assert plan.match("r", b"ns", prompt, 0) == 10
    plan.allocated("r", 10)
    step = plan.plan_step([ScheduledRequest("r", prompt, 11, 10, 1, [4, 5, 6])])
    assert step.loads == (BlockTransfer(keys_of(prompt)[0], 4), BlockTransfer(keys_of(prompt)[1], 5),
                          BlockTransfer(tail_of(prompt), 6))
    assert step.saves == ()


def test_a_tail_of_another_prompt_is_not_used():
    prompt = list(range(11))
    other_tail = tail_of(list(range(10)) + [99])
    plan = planner(set(keys_of(prompt)) | {other_tail})
    assert plan.match("r", b"ns", prompt, 0) == 8


def test_a_hit_loads_the_stored_prefix_in_the_first_step_and_does_not_save_it_again():
    prompt = list(range(14))
    stored = set(keys_of(prompt)[:2])
    plan = planner(stored)
    assert plan.match("r", b"ns", prompt, 0) == 8
    plan.allocated("r", 8)
    step = plan.plan_step([ScheduledRequest("r", prompt, len(prompt), 8, 6, [3, 4, 5, 6])])
    keys = keys_of(prompt)
    assert step.loads == (BlockTransfer(keys[0], 3), BlockTransfer(keys[1], 4))
    assert step.saves == (BlockTransfer(keys[2], 5), BlockTransfer(tail_of(prompt), 6))
    assert plan.plan_step([ScheduledRequest("r", prompt, len(prompt), 14, 1, [3, 4, 5, 6])]).loads == ()


def test_the_match_starts_after_the_engines_own_prefix_hit():
    prompt = list(range(17))
    plan = planner(set(keys_of(prompt)))
    assert plan.match("r", b"ns", prompt, 8) == 8  # blocks 2 and 3 beyond the engine's 2 cached blocks


def test_another_namespace_is_a_miss():
    prompt = list(range(12))
    plan = planner(set(keys_of(prompt, root=b"tenant-a")))
    assert plan.match("r", b"tenant-b", prompt, 0) == 0


def test_blocks_already_stored_are_not_saved_again():
    prompt = list(range(12))
    plan = planner({keys_of(prompt)[0]})
    plan.match("r", b"other", prompt, 0)  # a different root: nothing matches, so everything is computed
    step = plan.plan_step([ScheduledRequest("r", prompt, len(prompt), 0, 12, [1, 2, 3])])
    assert [t.block_id for t in step.saves] == [1, 2, 3]
    plan2 = planner({keys_of(prompt)[1]})
    plan2.match("r", b"ns", prompt, 0)
    step = plan2.plan_step([ScheduledRequest("r", prompt, len(prompt), 0, 12, [1, 2, 3])])
    assert [t.block_id for t in step.saves] == [1, 3]


def test_blocks_in_the_engines_own_cache_are_not_saved_by_this_request():
    prompt = list(range(12))
    plan = planner(set())
    assert plan.match("r", b"ns", prompt, 8) == 0  # the engine already holds blocks 0 and 1
    step = plan.plan_step([ScheduledRequest("r", prompt, len(prompt), 8, 4, [1, 2, 3])])
    assert [t.block_id for t in step.saves] == [3]


def test_finished_requests_are_forgotten():
    plan = planner(set())
    plan.match("r", b"ns", list(range(8)), 0)
    plan.finished("r")
    assert plan.plan_step([ScheduledRequest("r", list(range(8)), 8, 0, 8, [1, 2])]).saves == ()
