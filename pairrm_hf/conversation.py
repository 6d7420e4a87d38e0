"""Multi-turn conversations as PairRM texts, exactly as upstream's ``compare_conversations`` builds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["CONVERSATION_INSTRUCTION", "conversation_texts", "conversation_pair_texts"]

#: Upstream's instruction, typo ("coversation") included: the checkpoints were evaluated with it.
CONVERSATION_INSTRUCTION = (
    "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
)


def _turns(name: str, conversation: Sequence[Mapping]) -> list[tuple[str, str]]:
    if isinstance(conversation, (str, bytes)) or not isinstance(conversation, Sequence):
        raise TypeError(f"{name} must be a list of {{'role', 'content'}} messages, got {type(conversation).__name__}")
    turns = []
    for k, message in enumerate(conversation):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise TypeError(f"{name}[{k}] must be a mapping with 'role' and 'content'")
        if not isinstance(message["content"], str):
            raise TypeError(f"{name}[{k}]['content'] must be a str, got {type(message['content']).__name__}")
        turns.append((str(message["role"]).lower(), message["content"]))
    if not turns or len(turns) % 2:
        raise ValueError(f"{name} must have an even, non-zero number of messages (user/assistant turns), got {len(turns)}")
    for k, (role, _) in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"{name}[{k}] has role {role!r}; expected {expected!r} (turns alternate user, assistant)")
    return turns


def conversation_texts(conversation: Sequence[Mapping], name: str = "conversation") -> tuple[str, str]:
    """``(source, candidate)`` texts of one conversation; roles are matched case-insensitively."""
    turns = _turns(name, conversation)
    users = [c for role, c in turns if role == "user"]
    answers = [c for role, c in turns if role == "assistant"]
    source = CONVERSATION_INSTRUCTION + "\n".join(
        f"USER: {content}\nAssistant: <Response {k}>" for k, content in enumerate(users, start=1)
    )
    candidate = "\n".join(f"<Response {k}>: {content}" for k, content in enumerate(answers, start=1))
    return source, candidate


def conversation_pair_texts(
    conversations_a: Sequence[Sequence[Mapping]], conversations_b: Sequence[Sequence[Mapping]]
) -> tuple[list[str], list[str], list[str]]:
    """Sources and the two candidate texts for conversations that share their user turns."""
    if len(conversations_a) != len(conversations_b):
        raise ValueError(
            f"conversations_b has {len(conversations_b)} items but conversations_a has {len(conversations_a)}"
        )
    sources, cands_a, cands_b = [], [], []
    for k, (conv_a, conv_b) in enumerate(zip(conversations_a, conversations_b)):
        src_a, cand_a = conversation_texts(conv_a, f"conversations_a[{k}]")
        src_b, cand_b = conversation_texts(conv_b, f"conversations_b[{k}]")
        if src_a != src_b:
            raise ValueError(f"conversations_a[{k}] and conversations_b[{k}] must have the same user turns")
        sources.append(src_a)
        cands_a.append(cand_a)
        cands_b.append(cand_b)
    return sources, cands_a, cands_b
