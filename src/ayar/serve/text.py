"""Turning generated token ids into text, one token at a time, with stop sequences.

A streamed reply must never show text it later takes back. Two things can make
the text of a prefix of the tokens differ from the start of the final text:

- a stop sequence split across tokens: after ``"Ans"`` with stop ``"Answer:"``
  the ``"Ans"`` may still turn out to be the start of the stop sequence, which
  is removed from the output;
- a character split across tokens: byte-level BPE can end a token in the middle
  of a UTF-8 character, which decodes to U+FFFD until the next token completes it.

So each step decodes every token so far, cuts at the first stop sequence, and
releases only the text that neither could still change. Decoding the whole
sequence each step costs O(n²) for n generated tokens, negligible next to the
model's forward pass at the lengths this server is meant for.
"""

from __future__ import annotations

from collections.abc import Iterable

REPLACEMENT = "\ufffd"


def held_back(text: str, stops: Iterable[str]) -> int:
    """How many trailing characters of ``text`` may still change or belong to a stop sequence.

    Returns:
        The length of the longest suffix that is a proper prefix of a stop
        sequence, or of the run of trailing U+FFFD, whichever is longer.
    """
    partial = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), partial, -1):
            if text.endswith(stop[:size]):
                partial = size
                break
    undecoded = len(text) - len(text.rstrip(REPLACEMENT))
    return max(partial, undecoded)


class TextStream:
    """Accumulates generated tokens and hands out the text that is final.

    Args:
        tokenizer: decodes ids (special tokens skipped, as offline generation does).
        end_ids: token ids that end the reply (end of turn, EOS).
        stops: stop sequences; the reply ends before the first one, which is not shown.
    """

    def __init__(self, tokenizer, end_ids: Iterable[int], stops: Iterable[str] = ()):
        self._tokenizer = tokenizer
        self._end_ids = set(end_ids)
        self._stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.finish_reason: str | None = None  # "stop" once an end token or a stop sequence is seen
        self._text = ""
        self._released = 0

    @property
    def text(self) -> str:
        """The reply so far, including text not yet released."""
        return self._text

    def add(self, token_id: int) -> str:
        """Take one generated token; return the newly final text (often empty)."""
        if self.finish_reason is not None:
            raise RuntimeError("the reply has already ended")
        self.ids.append(token_id)
        if token_id in self._end_ids:
            self.finish_reason = "stop"
            return self.flush()
        self._text = self._tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [i for i in (self._text.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._text = self._text[: min(hits)]
            self.finish_reason = "stop"
            return self.flush()
        end = len(self._text) - held_back(self._text, self._stops)
        delta = self._text[self._released : end]
        self._released = max(self._released, end)
        return delta

    def flush(self) -> str:
        """Release everything not yet released (at the end of generation)."""
        delta = self._text[self._released :]
        self._released = len(self._text)
        return delta
