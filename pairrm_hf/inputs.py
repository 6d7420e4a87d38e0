"""The one input rule of pairrm-hf: every accepted input form becomes PairRM ``(source, candidate)`` texts here.

Every surface (``PairRM``, ``Blender``, the pipelines, the TRL rewards and judges, DPO labelling, the CLI, the
training collator and the evaluation) calls this module, so one chat gets one PairRM text, and one score,
whichever door it comes through.

The rule, with the one switch ``input_format``:

* ``"auto"`` (default): **plain strings stay plain**: source = ``instruction + prompt`` (no separator, as the
  checkpoints were trained), candidate = the answer. This is the original's ``rank``/``compare`` and TRL's old
  PairRM judge. **Chat message lists** (``[{"role", "content"}, …]``, any number of turns, optional leading system
  messages) use the original's conversation template (its ``compare_conversations``; RewardBench's PairRM path)::

      source    = [system contents, "\n"-joined, + "\n"] + CONVERSATION_INSTRUCTION
                  + "\n".join(f"USER: {user_k}\nAssistant: <Response {k}>")
      candidate = "\n".join(f"<Response {k}>: {assistant_k}")

* ``"conversation"``: plain strings are formatted through the same template as a one-turn chat
  (``[user: instruction + prompt, assistant: answer]``): how RewardBench scores every row with PairRM.

A prompt may be a string or messages; an answer may be a string (one assistant turn) or assistant messages; a
full conversation may stand alone as the answer with no prompt (an "implicit prompt", as in TRL's conversational
preference rows). All answers to one prompt must give the same source (the same user turns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CONVERSATION_INSTRUCTION",
    "INPUT_FORMATS",
    "is_messages",
    "check_input_format",
    "source_text",
    "source_texts",
    "conversation_texts",
    "answer_texts",
    "answer_set_texts",
    "conversation_pair_texts",
]

#: The original's instruction, typo ("coversation") included: the checkpoints were evaluated with it.
CONVERSATION_INSTRUCTION = (
    "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
)

#: Values of the ``input_format`` switch (same name, same meaning on every surface).
INPUT_FORMATS = ("auto", "conversation")


def is_messages(value: Any) -> bool:
    """True for a non-empty list of mappings with a ``role`` (a chat in TRL's conversational format)."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) > 0
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def check_input_format(input_format: str) -> str:
    """``input_format`` must be one of :data:`INPUT_FORMATS`; returns it."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
    return input_format


def source_text(prompt: str, instruction: str | None = None) -> str:
    """The plain source: ``instruction + prompt`` with no separator (how the checkpoints were trained)."""
    return prompt if not instruction else instruction + prompt


def source_texts(prompts: Sequence[str], instructions: Sequence[str] | None = None) -> list[str]:
    """:func:`source_text` of each prompt; ``instructions`` (when given) must be str, one per prompt."""
    prompts = list(prompts)
    if instructions is None:
        return prompts
    if isinstance(instructions, (str, bytes)) or not isinstance(instructions, Sequence):
        raise TypeError(f"instructions must be a list of str, got {type(instructions).__name__}")
    if len(instructions) != len(prompts):
        raise ValueError(f"instructions has {len(instructions)} items but prompts has {len(prompts)}; they must match")
    for k, text in enumerate(instructions):
        if not isinstance(text, str):
            raise TypeError(f"instructions[{k}] must be a str, got {type(text).__name__}")
    return [source_text(p, i) for p, i in zip(prompts, instructions)]


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
            f"{name} must hold user/assistant turns in pairs (after any leading system messages), "
            f"got {len(dialogue)} such messages"
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
) -> tuple[str, str]:
    """``(source, candidate)`` of one answer to one prompt, by the module's rule.

    Args:
        prompt: a str, chat messages ending with a user turn (optionally after system messages and earlier
            turns), or ``None`` when ``answer`` is a whole conversation.
        answer: a str (one assistant turn) or messages (the assistant turn(s), or the whole conversation when
            ``prompt`` is ``None``).
        instruction: put before a plain prompt (``instruction + prompt``); not allowed with messages.
        input_format: ``"auto"`` or ``"conversation"`` (see the module docstring).
        name: how errors name this input (e.g. ``"prompts[3]"``).
    """
    check_input_format(input_format)
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError(f"{name}: instruction must be a str, got {type(instruction).__name__}")
    plain_prompt = isinstance(prompt, str)
    if not plain_prompt and prompt is not None and not is_messages(prompt):
        raise TypeError(
            f"{name}: the prompt must be a str or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}"
        )
    if not isinstance(answer, str) and not is_messages(answer):
        raise TypeError(
            f"{name}: the answer must be a str or a list of {{'role', 'content'}} messages, got {type(answer).__name__}"
        )
    if instruction and not plain_prompt:
        raise ValueError(f"{name}: instruction applies to plain-string prompts; put it in the chat messages instead")
    if prompt is None:
        if isinstance(answer, str):
            raise TypeError(f"{name}: a str answer needs a prompt (only whole conversations may stand alone)")
        return conversation_texts(answer, f"{name} conversation")
    if plain_prompt and isinstance(answer, str):
        if input_format == "auto":
            return source_text(prompt, instruction), answer
        chat = [{"role": "user", "content": source_text(prompt, instruction)}, {"role": "assistant", "content": answer}]
        return conversation_texts(chat, name)
    head = [{"role": "user", "content": source_text(prompt, instruction)}] if plain_prompt else list(prompt)
    tail = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)
    return conversation_texts(head + tail, f"{name} prompt + answer")


def answer_set_texts(
    prompt: str | Sequence[Mapping] | None,
    answers: Sequence[str | Sequence[Mapping]],
    *,
    instruction: str | None = None,
    input_format: str = "auto",
    name: str = "input",
) -> tuple[str, list[str]]:
    """``(source, candidates)`` of several answers to one prompt; every answer must give the same source.

    ``answers`` may mix strings and messages only when they agree on the source (e.g. a str answer to a chat
    prompt and an assistant message list); whole conversations (``prompt=None``) must share their user turns.
    """
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence):
        raise TypeError(f"{name}: the answers must be a list, got {type(answers).__name__}")
    if not answers:
        raise ValueError(f"{name}: the answer list is empty; each input needs at least one candidate")
    source, texts = None, []
    for k, answer in enumerate(answers):
        src, text = answer_texts(
            prompt, answer, instruction=instruction, input_format=input_format, name=f"{name}[{k}]"
        )
        if source is None:
            source = src
        elif src != source:
            raise ValueError(
                f"{name}[{k}] gives a different PairRM source from {name}[0]: answers to one prompt must share "
                "their user turns (and be all plain strings or all chats)"
            )
        texts.append(text)
    return source, texts


def conversation_pair_texts(
    conversations_a: Sequence[Sequence[Mapping]], conversations_b: Sequence[Sequence[Mapping]]
) -> tuple[list[str], list[str], list[str]]:
    """Sources and the two candidate texts of whole conversations that share their user turns (``compare``)."""
    for name, value in (("conversations_a", conversations_a), ("conversations_b", conversations_b)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list of conversations, got {type(value).__name__}")
    if len(conversations_a) != len(conversations_b):
        raise ValueError(
            f"conversations_b has {len(conversations_b)} items but conversations_a has {len(conversations_a)}"
        )
    sources, cands_a, cands_b = [], [], []
    for k, (conv_a, conv_b) in enumerate(zip(conversations_a, conversations_b)):
        source, (a, b) = answer_set_texts(None, [conv_a, conv_b], name=f"conversations[{k}]")
        sources.append(source)
        cands_a.append(a)
        cands_b.append(b)
    return sources, cands_a, cands_b
