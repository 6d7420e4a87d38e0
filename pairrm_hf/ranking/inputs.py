"""The one input rule of pairrm-hf: every accepted input form becomes PairRM ``(source, candidate)`` texts here.

Every surface (``PairRM``, ``Blender``, the pipelines, the TRL rewards and judges, DPO labelling, the CLI, the
training collator and the evaluation) calls this module, so one chat gets one PairRM text, and one score,
whichever door it comes through.

The rule, with the one switch ``input_format``:

* ``"auto"`` (default): **plain strings stay plain**: source = ``instruction + prompt`` (no separator, as the
  checkpoints were trained), candidate = the answer. This is the original's ``rank``/``compare`` and TRL's old
  PairRM judge. **Chat message lists** (``[{"role", "content"}, …]``, any number of turns, optional leading system
  messages) always use the original's conversation template (its ``compare_conversations``; RewardBench's PairRM
  path), one-turn chats included::

      source    = [system contents, "\n"-joined, + "\n"] + CONVERSATION_INSTRUCTION
                  + "\n".join(f"USER: {user_k}\nAssistant: <Response {k}>")
      candidate = "\n".join(f"<Response {k}>: {assistant_k}")

* ``"conversation"``: plain strings are formatted through the same template as a one-turn chat
  (``[user: instruction + prompt, assistant: answer]``): how RewardBench scores every row with PairRM.

A prompt may be a string or messages (ending with a user turn); an answer may be a string (one assistant turn)
or assistant messages. An answer that holds user turns is a *whole conversation*: it carries its own prompt, and
the ``prompt`` argument is not used (it may be ``None``, as in TRL's implicit-prompt preference rows; datasets such
as UltraFeedback also store a ``prompt`` string next to whole conversations). All answers to one prompt must give
the same source (the same user turns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..utils.checks import check_list

__all__ = [
    "CONVERSATION_INSTRUCTION",
    "INPUT_FORMATS",
    "is_messages",
    "is_whole_conversation",
    "check_input_format",
    "check_text",
    "source_text",
    "source_texts",
    "conversation_texts",
    "answer_texts",
    "answer_set_texts",
    "batch_texts",
    "compare_texts",
    "conversation_pair_texts",
    "preference_texts",
]

#: The original's instruction, typo ("coversation") included: the checkpoints were evaluated with it.
CONVERSATION_INSTRUCTION = (
    "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
)

#: Values of the ``input_format`` switch (same name, same meaning on every surface).
INPUT_FORMATS = ("auto", "conversation")

_EXPECTED = "a str or a list of {'role', 'content'} messages"


def is_messages(value: Any) -> bool:
    """True for a non-empty list of mappings with a ``role`` (a chat in TRL's conversational format)."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) > 0
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def is_whole_conversation(value: Any) -> bool:
    """True for messages that hold a user turn: a whole conversation, which carries its own prompt."""
    return is_messages(value) and any(str(m["role"]).lower() == "user" for m in value)


def check_input_format(input_format: str) -> str:
    """``input_format`` must be one of :data:`INPUT_FORMATS`; returns it."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
    return input_format


def check_text(name: str, text: str) -> str:
    """``text`` if it is valid Unicode; ``ValueError`` naming ``name`` for a lone surrogate (``"\\ud800"``).

    JSON may spell such code points (``"\\ud800"`` is valid JSON), but they are no text: a tokenizer cannot read
    them and UTF-8 cannot write them. Checked with every other input check, before any compute.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"{name}: holds a lone surrogate code point U+{ord(text[err.start]):04X} at character {err.start}, "
                "which is not valid Unicode text; fix the data (e.g. the producer's JSON escapes)"
            ) from None
    return text


def source_text(prompt: str, instruction: str | None = None) -> str:
    """The plain source: ``instruction + prompt`` with no separator (how the checkpoints were trained)."""
    return prompt if not instruction else instruction + prompt


def _check_instructions(instructions: Any, n: int, prompts_name: str = "prompts") -> list[str | None]:
    if instructions is None:
        return [None] * n
    instructions = check_list("instructions", instructions, "of str")
    if len(instructions) != n:
        raise ValueError(f"instructions has {len(instructions)} items but {prompts_name} has {n}; they must match")
    for k, text in enumerate(instructions):
        if not isinstance(text, str):
            raise TypeError(f"instructions[{k}] must be a str, got {type(text).__name__}")
    return instructions


def source_texts(prompts: Sequence[str], instructions: Sequence[str] | None = None) -> list[str]:
    """:func:`source_text` of each prompt; ``instructions`` (when given) must be str, one per prompt."""
    prompts = list(prompts)
    if instructions is None:
        return prompts
    return [source_text(p, i) for p, i in zip(prompts, _check_instructions(instructions, len(prompts)))]


def _messages(name: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of {{'role', 'content'}} messages, got {type(value).__name__}")
    out = []
    for k, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise TypeError(f"{name}[{k}] must be a mapping with 'role' and 'content'")
        content = message["content"]
        if not isinstance(content, str):
            raise TypeError(
                f"{name}[{k}]['content'] must be a str, got {type(content).__name__} (multimodal content is not supported)"
            )
        check_text(f"{name}[{k}]['content']", content)
        out.append((str(message["role"]).lower(), content))
    return out


def conversation_texts(messages: Sequence[Mapping], name: str = "conversation") -> tuple[str, str]:
    """``(source, candidate)`` of one whole chat through the original's conversation template.

    Roles are matched case-insensitively. Leading ``system`` messages are allowed (their contents go before the
    template, newline separated: PairRM has no system slot); the rest must alternate user, assistant, starting
    with user and ending with assistant.
    """
    turns = _messages(name, messages)
    start = 0
    while start < len(turns) and turns[start][0] == "system":
        start += 1
    system, dialogue = [c for _, c in turns[:start]], turns[start:]
    if not dialogue or len(dialogue) % 2:
        raise ValueError(
            f"{name} must hold an even, non-zero number of messages (user/assistant pairs, after any leading "
            f"system messages), got {len(dialogue)}"
        )
    for k, (role, _) in enumerate(dialogue):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"{name}[{start + k}] has role {role!r}; expected {expected!r} (system messages only at the start, "
                "then user and assistant alternate)"
            )
    users = [c for role, c in dialogue if role == "user"]
    answers = [c for role, c in dialogue if role == "assistant"]
    source = CONVERSATION_INSTRUCTION + "\n".join(
        f"USER: {content}\nAssistant: <Response {k}>" for k, content in enumerate(users, start=1)
    )
    if system:
        source = "\n".join(system) + "\n" + source
    candidate = "\n".join(f"<Response {k}>: {content}" for k, content in enumerate(answers, start=1))
    return source, candidate


def answer_texts(
    prompt: str | Sequence[Mapping] | None,
    answer: str | Sequence[Mapping],
    *,
    instruction: str | None = None,
    input_format: str = "auto",
    name: str = "input",
    prompt_name: str | None = None,
    answer_name: str | None = None,
) -> tuple[str, str]:
    """``(source, candidate)`` of one answer to one prompt, by the module's rule.

    Args:
        prompt: a str, chat messages ending with a user turn (optionally after system messages and earlier
            turns), or ``None`` when ``answer`` is a whole conversation.
        answer: a str (one assistant turn) or messages: the assistant turn(s), or a whole conversation (it holds
            user turns; ``prompt`` is then not used).
        instruction: put before a plain prompt (``instruction + prompt``); not allowed with messages.
        input_format: ``"auto"`` or ``"conversation"`` (see the module docstring).
        name: how errors name this input (e.g. ``"inputs[3]"``); ``prompt_name``/``answer_name`` name the two
            parts precisely (e.g. ``"prompts[3]"``, ``"candidates[3][1]"``).
    """
    check_input_format(input_format)
    prompt_name = prompt_name or f"{name}: the prompt"
    answer_name = answer_name or f"{name}: the answer"
    if not isinstance(answer, str) and not is_messages(answer):
        raise TypeError(f"{answer_name} must be {_EXPECTED}, got {type(answer).__name__}")
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError(f"{answer_name}: the instruction must be a str, got {type(instruction).__name__}")
    if isinstance(answer, str):
        check_text(answer_name, answer)
    if isinstance(prompt, str):
        check_text(prompt_name, prompt)
    if instruction:
        check_text(f"{prompt_name}: the instruction", instruction)
    if is_whole_conversation(answer):
        if instruction:
            raise ValueError(f"{answer_name}: instruction applies to plain-string prompts, not whole conversations")
        return conversation_texts(answer, answer_name)
    plain_prompt = isinstance(prompt, str)
    if not plain_prompt and not is_messages(prompt):
        hint = " (None only when the answers are whole conversations)" if prompt is None else ""
        raise TypeError(f"{prompt_name} must be {_EXPECTED}{hint}, got {type(prompt).__name__}")
    if instruction and not plain_prompt:
        raise ValueError(f"{prompt_name}: instruction applies to plain-string prompts; put it in the chat messages")
    if plain_prompt and isinstance(answer, str):
        if input_format == "auto":
            return source_text(prompt, instruction), answer
        chat = [{"role": "user", "content": source_text(prompt, instruction)}, {"role": "assistant", "content": answer}]
        return conversation_texts(chat, f"{prompt_name} + {answer_name}")
    head = [{"role": "user", "content": source_text(prompt, instruction)}] if plain_prompt else list(prompt)
    tail = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)
    return conversation_texts(head + tail, f"{prompt_name} + {answer_name}")


def answer_set_texts(
    prompt: str | Sequence[Mapping] | None,
    answers: Sequence[str | Sequence[Mapping]],
    *,
    instruction: str | None = None,
    input_format: str = "auto",
    name: str = "input",
    prompt_name: str | None = None,
    answers_name: str | None = None,
) -> tuple[str, list[str]]:
    """``(source, candidates)`` of several answers to one prompt; every answer must give the same source.

    ``answers`` may mix strings and messages only when they agree on the source (e.g. a str answer to a chat
    prompt and an assistant message list); whole conversations must share their user turns.
    """
    answers_name = answers_name or f"{name}: the answers"
    answers = check_list(answers_name, answers, "of answers: str or chat messages")
    if not answers:
        raise ValueError(f"{answers_name} is empty: each input needs at least one candidate")
    source, texts = None, []
    for k, answer in enumerate(answers):
        src, text = answer_texts(
            prompt,
            answer,
            instruction=instruction,
            input_format=input_format,
            prompt_name=prompt_name or f"{name}: the prompt",
            answer_name=f"{answers_name}[{k}]",
        )
        if source is None:
            source = src
        elif src != source:
            raise ValueError(
                f"{answers_name}[{k}] gives a different PairRM source from {answers_name}[0]: answers to one prompt "
                "must share their user turns (and be all plain strings or all chats)"
            )
        texts.append(text)
    return source, texts


def batch_texts(
    prompts: Sequence[str | Sequence[Mapping] | None],
    candidates: Sequence[Sequence[str | Sequence[Mapping]]],
    *,
    instructions: Sequence[str] | None = None,
    input_format: str = "auto",
    prompts_name: str = "prompts",
    candidates_name: str = "candidates",
) -> tuple[list[str], list[list[str]]]:
    """Sources and candidate texts of a batch: ``prompts[k]`` and its answers ``candidates[k]`` (the ranking form).

    Checks the containers (lists, equal lengths, non-empty) with errors naming the argument and the index.
    """
    check_input_format(input_format)
    prompts = check_list(prompts_name, prompts, "of str or chat messages")
    if not prompts:
        raise ValueError(f"{prompts_name} is empty: pass at least one item")
    candidates = check_list(candidates_name, candidates, "of lists of answers")
    if len(candidates) != len(prompts):
        raise ValueError(
            f"{candidates_name} has {len(candidates)} items but {prompts_name} has {len(prompts)}; they must match"
        )
    instructions = _check_instructions(instructions, len(prompts), prompts_name)
    sources, texts = [], []
    for k, (prompt, answers, instruction) in enumerate(zip(prompts, candidates, instructions)):
        name = f"{candidates_name}[{k}]"
        check_list(name, answers, "of answers: str or chat messages")
        source, cands = answer_set_texts(
            prompt,
            answers,
            instruction=instruction,
            input_format=input_format,
            prompt_name=f"{prompts_name}[{k}]",
            answers_name=name,
        )
        sources.append(source)
        texts.append(cands)
    return sources, texts


def compare_texts(
    prompts: Sequence[str | Sequence[Mapping] | None] | None,
    candidates_a: Sequence[str | Sequence[Mapping]],
    candidates_b: Sequence[str | Sequence[Mapping]],
    *,
    instructions: Sequence[str] | None = None,
    input_format: str = "auto",
    names: tuple[str, str, str] = ("prompts", "candidates_a", "candidates_b"),
) -> tuple[list[str], list[str], list[str]]:
    """Sources and the two candidate texts of pairs of answers (the comparison form).

    ``prompts=None`` means every pair is two whole conversations that share their user turns.
    """
    check_input_format(input_format)
    p_name, a_name, b_name = names
    candidates_a = check_list(a_name, candidates_a, "of answers: str or chat messages")
    candidates_b = check_list(b_name, candidates_b, "of answers: str or chat messages")
    if prompts is None:
        prompts = [None] * len(candidates_a)
    prompts = check_list(p_name, prompts, "of str or chat messages")
    if not prompts:
        raise ValueError(f"{p_name} is empty: pass at least one item")
    for other, seq in ((a_name, candidates_a), (b_name, candidates_b)):
        if len(seq) != len(prompts):
            raise ValueError(f"{other} has {len(seq)} items but {p_name} has {len(prompts)}; they must match")
    instructions = _check_instructions(instructions, len(prompts), p_name)
    sources, texts_a, texts_b = [], [], []
    for k, (prompt, a, b, instruction) in enumerate(zip(prompts, candidates_a, candidates_b, instructions)):
        kwargs = {"instruction": instruction, "input_format": input_format, "prompt_name": f"{p_name}[{k}]"}
        src_a, text_a = answer_texts(prompt, a, answer_name=f"{a_name}[{k}]", **kwargs)
        src_b, text_b = answer_texts(prompt, b, answer_name=f"{b_name}[{k}]", **kwargs)
        if src_a != src_b:
            raise ValueError(
                f"{b_name}[{k}] must have the same user turns as {a_name}[{k}] (and both be plain strings or both chats)"
            )
        sources.append(src_a)
        texts_a.append(text_a)
        texts_b.append(text_b)
    return sources, texts_a, texts_b


def conversation_pair_texts(
    conversations_a: Sequence[Sequence[Mapping]], conversations_b: Sequence[Sequence[Mapping]]
) -> tuple[list[str], list[str], list[str]]:
    """Sources and the two candidate texts of whole conversations that share their user turns (``compare``)."""
    for name, value in (("conversations_a", conversations_a), ("conversations_b", conversations_b)):
        check_list(name, value, "of conversations")
        for k, conv in enumerate(value):
            if not is_whole_conversation(conv):
                # turn a str or an assistant-only list into the template's own error, naming the conversation
                conversation_texts(conv, f"{name}[{k}]")
    return compare_texts(
        None, conversations_a, conversations_b, names=("conversations", "conversations_a", "conversations_b")
    )


def preference_texts(row: Mapping[str, Any], index: int = 0, *, input_format: str = "auto") -> tuple[str, str, str]:
    """``(source, chosen, rejected)`` PairRM texts of one TRL preference row (standard or conversational).

    Standard rows hold three strings. Conversational rows hold messages: a prompt (or none: an implicit prompt,
    with whole conversations in ``chosen``/``rejected``) and the assistant turn(s) of each answer.
    """
    if not isinstance(row, Mapping):
        raise TypeError(f"row {index} must be a mapping with 'chosen' and 'rejected', got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise ValueError(f"row {index} has no {key!r} (preference rows need 'prompt', 'chosen', 'rejected')")
    prompt = row.get("prompt")
    kwargs = {"input_format": input_format, "prompt_name": f"row {index} 'prompt'"}
    src_c, chosen = answer_texts(prompt, row["chosen"], answer_name=f"row {index} 'chosen'", **kwargs)
    src_r, rejected = answer_texts(prompt, row["rejected"], answer_name=f"row {index} 'rejected'", **kwargs)
    if src_c != src_r:
        raise ValueError(
            f"row {index}: 'chosen' and 'rejected' must share the same user turns (and be both plain strings or both chats)"
        )
    return src_c, chosen, rejected
