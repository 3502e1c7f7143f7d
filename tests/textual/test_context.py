from datetime import datetime, timezone

from hypothesis import given, strategies as st

from textual.context import header_cost, line_cost, render
from textual.memory import Memory, MemoryType
from textual.tokens import count_tokens

MAY_8 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc).timestamp()


def memory(key, content, when=MAY_8, position=0, speaker="Caroline", type=MemoryType.EPISODE):
    return Memory(id=key, tenant="t", user="u", type=type, content=content, created_at=when, updated_at=when,
                  last_access_at=when, metadata={"speaker": speaker, "session": "s1", "position": position})


def test_render_groups_turns_under_day_headers_in_turn_order():
    text = render([memory("b", "Fine, thanks!", position=1), memory("a", "How are you?", speaker="Mel"),
                   memory("c", "I like tea", when=MAY_8 + 86_400, type=MemoryType.FACT)])
    assert text == ('On 8 May 2023:\n- Mel said: "How are you?"\n- Caroline said: "Fine, thanks!"\n'
                    "On 9 May 2023:\n- I like tea")


def test_count_tokens_uses_word_and_punctuation_pieces():
    assert count_tokens("Caroline: I'm fine!") == 7


@given(st.lists(st.tuples(st.text(min_size=1), st.integers(0, 5)), max_size=8))
def test_rendered_tokens_equal_line_plus_header_costs(rows):
    memories = [memory(str(i), text if text.strip() else "x", when=MAY_8 + day * 86_400, position=i)
                for i, (text, day) in enumerate(rows)]
    headers = {m.created_at // 86_400: header_cost(m) for m in memories}
    assert count_tokens(render(memories)) == sum(line_cost(m) for m in memories) + sum(headers.values())
