"""A fact about the user turned into chat examples: questions the user may ask about it, answered with the fact.

Why: an adapter trained on "My cat is named Votobi." as plain text learns to continue that text, but the sidecar
asks it "What is my cat's name?" as a chat-template prompt, and the two share almost nothing (`bench.distill`:
30% closed-book at 40 epochs, 0% at 80 while the text loss kept falling). So a fact becomes question/answer
examples in the served format:
- the questions are written by the base model itself, from a few-shot prompt of unrelated facts (greedy, then
  sampled for variety, deduplicated); nothing here knows the questions a user will ask. A small model strays
  ("How do I get past a horse?" for a fact about a car), so a question must share a content word with its fact;
- the answer is the fact said back to the user ("Your cat is named Votobi."): first-person words swapped for
  second-person ones, the rest verbatim, so the fact's own words (names, numbers) are what is learned.
"""

from __future__ import annotations

import re

# Unrelated to any benchmark's facts: they only show the model the shape of a first-person question.
FEW_SHOT = (
    ("I am allergic to peanuts.", "What am I allergic to?"),
    ("My daughter's teacher is Mrs. Lee.", "Who is my daughter's teacher?"),
    ("I moved to Lisbon in 2019.", "When did I move to Lisbon?"),
    ("My phone is a Pixel 7.", "Which phone do I have?"),
)
MAX_QUESTION_CHARS = 200
QUESTION_TOKENS = 24

_SECOND_PERSON = {
    "i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself",
    "i'm": "you're", "i've": "you've", "i'll": "you'll", "i'd": "you'd",
    "we": "you", "us": "you", "our": "your", "ours": "yours", "ourselves": "yourselves",
    "we're": "you're", "we've": "you've", "we'll": "you'll", "we'd": "you'd",
}
_VERB_AFTER_I = {"am": "are", "was": "were"}
_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?")
_FUNCTION_WORDS = frozenset("""
    a an the this that these those some any each every no not and or but if so of to in on at by for with from about
    as into over under after before than then there here what which who whom whose when where why how i me my mine
    myself you your yours we us our they them their he him his she her it its is am are was were be been being do
    does did done have has had having can could will would shall should may might must also just very
    """.split())


def second_person(statement: str) -> str:
    """`statement` as said back to its author: "I was born in Oslo." -> "You were born in Oslo."

    Only first-person pronouns (and "am"/"was" right after "I") change; capitals follow the original word.
    """
    words = list(_WORD.finditer(statement))
    out, last = [], 0
    for index, match in enumerate(words):
        word = match.group()
        key = word.lower().replace("’", "'")
        replacement = _SECOND_PERSON.get(key)
        if replacement is None and index > 0 and words[index - 1].group() == "I":
            replacement = _VERB_AFTER_I.get(key)
        if replacement is None:
            continue
        if word[0].isupper() and (key != "i" or match.start() == 0 or _starts_sentence(statement, match.start())):
            replacement = replacement[0].upper() + replacement[1:]
        out += [statement[last:match.start()], replacement]
        last = match.end()
    return "".join(out) + statement[last:]


def _starts_sentence(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?\"'(:"


def question_prompt(statement: str) -> str:
    """The few-shot completion prompt whose continuation is a question about `statement`."""
    shots = "".join(f"Statement: {fact}\nQuestion: {question}\n\n" for fact, question in FEW_SHOT)
    return f"{shots}Statement: {' '.join(statement.split())}\nQuestion:"


def parse_question(completion: str) -> str | None:
    """The question a completion of `question_prompt` wrote (its first line), or None if it wrote none."""
    text = completion.strip().split("\n", 1)[0].strip()
    if not text.endswith("?") or not 3 < len(text) <= MAX_QUESTION_CHARS:
        return None
    return text


def content_words(text: str) -> set[str]:
    """The lower-cased words of `text` that are not function words, without a possessive "'s"."""
    words = (match.group().lower().replace("’", "'") for match in _WORD.finditer(text))
    return {word.removesuffix("'s") for word in words} - _FUNCTION_WORDS


def unique_questions(statement: str, completions: list[str], count: int) -> list[str]:
    """The first `count` distinct questions (case and spacing ignored) among the completions, in order, each
    sharing a content word with `statement`."""
    seen, questions, topic = set(), [], content_words(statement)
    for completion in completions:
        question = parse_question(completion)
        key = " ".join(question.lower().split()) if question else None
        if key and key not in seen and content_words(question) & topic:
            seen.add(key)
            questions.append(question)
    return questions[:count]


def write_questions(model, tokenizer, statement: str, count: int, samples: int) -> list[str]:
    """Up to `count` distinct questions about `statement` from `model`: its greedy one first, then `samples`
    sampled ones (temperature 1, top-p 0.95; seed the torch RNG for repeatable runs)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer(question_prompt(statement), add_special_tokens=False)["input_ids"]], device=device)
    options = {"max_new_tokens": QUESTION_TOKENS, "pad_token_id": tokenizer.pad_token_id or 0,
               "stop_strings": ["\n"], "tokenizer": tokenizer}  # a question is one line
    with torch.no_grad():
        greedy = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **options)
        batch = ids.repeat(samples, 1)
        sampled = model.generate(batch, attention_mask=torch.ones_like(batch), do_sample=True, temperature=1.0,
                                 top_p=0.95, top_k=0, **options) if samples else batch[:0]
    completions = [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in [*greedy, *sampled]]
    return unique_questions(statement, completions, count)
