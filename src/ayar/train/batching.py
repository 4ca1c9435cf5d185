"""Turning tokenised examples into batches: order, length grouping, packing, padding.

The order of micro-batches depends only on the seed and the position in an
endless stream, so a run resumed at micro-batch ``k`` sees exactly the batches
an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE

GROUP_WINDOW = 64  # micro-batches per window within which examples are sorted by length


@dataclass(frozen=True)
class PackedExample:
    """Several examples in one row; ``position_ids`` restart at 0 at each example."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def collate(examples: Sequence, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad examples into ``input_ids``, ``labels`` and ``attention_mask`` (batch, seq).

    Packed rows get ``position_ids`` instead of an attention mask: transformers then
    builds a block-diagonal causal mask from the position restarts, so packed
    examples do not attend to each other. Padding forms one more block whose
    labels are ignored.
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    packed = isinstance(examples[0], PackedExample)
    positions = torch.arange(width).repeat(len(examples), 1)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
        if packed:
            positions[row, :n] = torch.tensor(ex.position_ids)
            positions[row, n:] = torch.arange(width - n)
    if packed:
        return {"input_ids": ids, "labels": labels, "position_ids": positions}
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _epoch_batches(n: int, batch_size: int, seed: int, lengths: Sequence[int] | None) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    # Length grouping: sort within windows of GROUP_WINDOW batches so a batch holds similar
    # lengths (little padding), then shuffle the batches so lengths do not trend over the epoch.
    batches = []
    window = batch_size * GROUP_WINDOW
    for start in range(0, n, window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffle = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed + 1_000_003)).tolist()
    return [batches[i] for i in shuffle]


def micro_batches(n_examples: int, batch_size: int, seed: int, lengths: Sequence[int] | None = None,
                  start: int = 0) -> Iterator[list[int]]:
    """Endless stream of index lists, reshuffled each epoch from ``seed + epoch``.

    Args:
        lengths: when given, batches group examples of similar length.
        start: number of micro-batches to skip (the position a resumed run continues from).
    """
    per_epoch = -(-n_examples // batch_size)
    epoch, offset = divmod(start, per_epoch)
    while True:
        yield from _epoch_batches(n_examples, batch_size, seed + epoch, lengths)[offset:]
        epoch, offset = epoch + 1, 0


def pack(examples: Sequence, max_length: int) -> list[PackedExample]:
    """Pack examples into rows of at most ``max_length`` tokens (first fit, in order of decreasing length).

    The first label of every example is ignored, so the last token of one example
    is never trained to predict the first token of the next.
    """
    rows: list[list] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        n = len(ex.input_ids)
        for r, free in enumerate(room):
            if free >= n:
                rows[r].append(ex)
                room[r] -= n
                break
        else:
            rows.append([ex])
            room.append(max_length - n)
    out = []
    for row in rows:
        ids, labels, positions = [], [], []
        for ex in row:
            ids += ex.input_ids
            labels += [IGNORE, *ex.labels[1:]]
            positions += range(len(ex.input_ids))
        out.append(PackedExample(ids, labels, positions))
    return out


def padding_fraction(examples: Sequence, batch_size: int, seed: int, lengths: Sequence[int] | None,
                     batches: int) -> float:
    """Share of padding tokens over the first ``batches`` micro-batches of the stream."""
    stream = micro_batches(len(examples), batch_size, seed, lengths)
    real = total = 0
    for _ in range(batches):
        idx = next(stream)
        sizes = [len(examples[i].input_ids) for i in idx]
        real += sum(sizes)
        total += max(sizes) * len(sizes)
    return 1 - real / max(total, 1)
