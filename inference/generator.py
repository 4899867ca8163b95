"""Text in and out of the shared model: chat template to token ids, stop tokens, token ids back to text.

The decoding loop itself is the scheduler's (:mod:`inference.scheduler`): it runs many requests in one
batch. :class:`Detokenizer` turns a row's tokens into text pieces as they come, for streaming; the pieces
always add up to the text a non-streamed answer has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference.errors import GenerationError

GENERATION_OPTIONS = ("max_new_tokens", "min_new_tokens", "temperature", "top_p")


class ChatEncoder:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def encode(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        except Exception as exc:  # template or tokenizer errors of every kind: translated once, here
            raise GenerationError(f"cannot apply the chat template: {type(exc).__name__}: {exc}") from exc
        return [int(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


def stop_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The tokens that end an answer: the generation config's eos ids and the tokenizer's."""
    found: set[int] = set()
    for source in (
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if isinstance(source, int):
            found.add(source)
        elif isinstance(source, list | tuple):
            found.update(int(i) for i in source)
    return frozenset(found)


class Detokenizer:
    """A row's text so far; :meth:`push` returns the new piece (held back while a character is incomplete)."""

    def __init__(self, encoder: ChatEncoder) -> None:
        self._encoder = encoder
        self._ids: list[int] = []
        self.sent = ""

    def push(self, token: int) -> str:
        self._ids.append(token)
        text = self._encoder.decode(self._ids)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""  # a multi-byte character not complete yet (or a re-spacing that later tokens settle)
        piece, self.sent = text[len(self.sent) :], text
        return piece

    def rest(self, final: str) -> str:
        """What is left to send once the answer is ``final``."""
        if final.startswith(self.sent):
            piece, self.sent = final[len(self.sent) :], final
            return piece
        return ""
