"""Token-level language-modelling loss, computed only where there is something to learn.

The model's backbone produces hidden states for every position, but the output
projection (the largest matmul for small models: hidden x vocab) is applied only
at positions whose next token is a target. For SFT, where the prompt is often
most of the sequence, this skips most of the vocabulary-sized logits.

Even the target positions are never scored all at once: :func:`target_logps`
runs the head in chunks of target positions (forward and backward, like the
fused linear cross-entropy of Liger-Kernel, Hsu et al. 2024), so the head's
memory is one chunk of (positions x vocabulary) logits whatever the number of
targets. With a 262k-token vocabulary (Gemma 3) 300 targets would otherwise
hold about 300 MiB of fp32 logits, and several such buffers in the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers ``*ForCausalLM`` inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def scale_logits(config, logits: torch.Tensor) -> torch.Tensor:
    """Apply the output transforms some architectures put after ``lm_head``.

    Gemma 2/3 cap logits with ``c * tanh(x / c)``; Cohere multiplies by
    ``logit_scale``; Granite divides by ``logits_scaling``.
    """
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = cap * torch.tanh(logits / cap)
    if getattr(config, "logit_scale", None) is not None and config.model_type.startswith("cohere"):
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):
        logits = logits / config.logits_scaling
    return logits


# One chunk's fp32 logits hold about this many elements: on a CPU 2**23 (32 MiB: 262 positions
# of a 32k vocabulary, 32 of a 262k one); on a GPU 2**25 (128 MiB), since a matrix product of a
# few dozen rows leaves most of a GPU's tensor cores idle.
CHUNK_ELEMENTS = {"cpu": 2**23, "cuda": 2**25}


def auto_chunk_size(vocab_size: int, device: str = "cpu") -> int:
    """Target positions per head chunk when the recipe leaves it to ayar (``train.loss_chunk_size: null``)."""
    return max(16, min(4096, CHUNK_ELEMENTS.get(device, 2**23) // max(1, vocab_size)))


def _chunk_logps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                 transform) -> torch.Tensor:
    """log p(target) of each row: x (rows, hidden) -> logits (rows, vocab), fp32 -> (rows,)."""
    logits = transform(F.linear(x, weight, bias).float())
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)


def _plain_chunk(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                 grad: bool, columns: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(target) of each row, and (``grad``) its gradient w.r.t. ``x``, for a head with no logit transform.

    The same values as :func:`_chunk_logps` and autograd, in fewer passes over the
    (rows, vocab) logits, all in place: max, subtract, exp, sum; then the softmax
    minus the one-hot target, one product with the weight: d log p / dx = (onehot - p) W.
    With ``columns`` (vocabulary ids), also returns d log p / d logits at those ids,
    (rows, len(columns)) fp32: what the gradient of those weight rows is made of.
    """
    z = F.linear(x, weight, bias).float()  # (rows, vocab)
    z.sub_(z.amax(dim=1, keepdim=True))
    picked = z.gather(1, targets[:, None]).squeeze(1)
    z.exp_()
    total = z.sum(dim=1)
    logps = picked - total.log()
    if not grad:
        return logps, None
    z.div_(total[:, None])  # softmax
    z.scatter_add_(1, targets[:, None], torch.full_like(picked[:, None], -1.0))  # p - onehot
    if columns is not None:
        return logps, -(z.to(x.dtype) @ weight), -z[:, columns]
    return logps, -(z.to(x.dtype) @ weight)  # (rows, hidden)


class _RowsTargetLogps(torch.autograd.Function):
    """log p(target) per row of ``hidden`` when, of the head, only a few vocabulary rows train.

    peft's trainable tokens (``adapter.train_embeddings: new`` or ``format``) replace rows ``index`` of
    the frozen head weight with a trainable ``delta``. Autograd through the merged
    weight would need the gradient of the whole (vocabulary, hidden) weight: a second
    pass over the logits and a product as large as the head itself, for a few thousand
    rows. Here the forward keeps, per target, d log p / d logits at those rows only
    ((targets, rows) fp32), and the backward makes the rows' gradient from it:
    d delta = (grad_out * that)^T hidden.
    """

    @staticmethod
    def forward(ctx, hidden, weight, delta, index, targets, chunk, dtype):
        w = weight.detach().to(dtype).index_copy(0, index, delta.detach().to(dtype))  # the merged head
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        grad_rows = torch.empty(hidden.shape[0], index.shape[0], dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            out[rows], grad_h[rows], grad_rows[rows] = _plain_chunk(
                hidden[rows].detach().to(dtype), w, None, targets[rows], True, index)
        ctx.save_for_backward(hidden, grad_h, grad_rows)
        ctx.delta_dtype = delta.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out: (rows,)
        hidden, grad_h, grad_rows = ctx.saved_tensors
        d_delta = (grad_rows * grad_out[:, None]).T @ hidden.float()  # (n_rows, hidden)
        return (grad_h * grad_out[:, None]).to(hidden.dtype), None, d_delta.to(ctx.delta_dtype), None, None, None, None


# Above this many (targets x trainable rows) elements the per-row gradients are not kept (train_embeddings: all
# trains every row: that is the whole logits): the head's weight gradient is then taken through autograd.
ROWS_GRAD_ELEMENTS = 2**25


def _trainable_token_rows(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(frozen weight, row ids, trainable delta) of a head wrapped by peft's trainable tokens with one
    active adapter; None for any other head."""
    layer = getattr(head, "token_adapter", None)
    if layer is None or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    base = layer.get_base_layer()
    if getattr(base, "bias", None) is not None or base.weight.requires_grad:
        return None
    delta = layer.trainable_tokens_delta[name]
    index = torch.as_tensor(layer.token_indices[name], dtype=torch.long, device=base.weight.device)
    return base.weight, index, delta


class _ChunkedTargetLogps(torch.autograd.Function):
    """log p(target) per row of ``hidden``, the head applied ``chunk`` rows at a time.

    Forward keeps only the (rows,) result. When only ``hidden`` needs a gradient
    (LoRA: the head is frozen), each chunk's gradient of its log-probs is taken
    in the forward, while its logits exist, and the backward only scales it by
    the incoming gradient (rows are independent, so that is exact). When the
    head's weight or bias needs a gradient, the backward recomputes each chunk's
    logits instead. Either way at most one chunk of logits is alive.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, transform, dtype):
        need_h, need_w = ctx.needs_input_grad[0], any(ctx.needs_input_grad[1:3])
        w = weight.detach().to(dtype)  # one cast per call (none when the head is already in `dtype`)
        b = None if bias is None else bias.detach().to(dtype)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)  # (rows,)
        grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h and not need_w else None
        probe = torch.zeros(1, 1)
        plain = transform(probe) is probe and not (need_w or (need_h and grad_h is None))
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            x = hidden[rows].detach().to(dtype)
            if plain:  # no logit transform and nothing to recompute: the hand-written pass
                out[rows], g = _plain_chunk(x, w, b, targets[rows], grad_h is not None)
                if g is not None:
                    grad_h[rows] = g
                continue
            if grad_h is None:
                out[rows] = _chunk_logps(x, w, b, targets[rows], transform)
                continue
            with torch.enable_grad():
                x.requires_grad_(True)
                logps = _chunk_logps(x, w, b, targets[rows], transform)
                (grad_h[rows],) = torch.autograd.grad(logps.sum(), x)
            out[rows] = logps.detach()
        ctx.chunk, ctx.transform, ctx.dtype = chunk, transform, dtype
        ctx.save_for_backward(hidden, weight, bias, targets, grad_h)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out: (rows,)
        hidden, weight, bias, targets, grad_h = ctx.saved_tensors
        none = (None, None, None, None)
        if grad_h is not None:
            return (grad_h * grad_out[:, None]).to(hidden.dtype), None, None, *none
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        w = weight.detach().to(ctx.dtype).requires_grad_(need_w)
        b = None if bias is None else bias.detach().to(ctx.dtype).requires_grad_(need_b)
        dh = torch.zeros_like(hidden) if need_h else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        db = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            with torch.enable_grad():
                x = hidden[rows].detach().to(ctx.dtype).requires_grad_(need_h)
                logps = _chunk_logps(x, w, b, targets[rows], ctx.transform)
                wanted = [t for t, need in ((x, need_h), (w, need_w), (b, need_b)) if need]
                grads = list(torch.autograd.grad(logps, wanted, grad_out[rows]))
            if need_h:
                dh[rows] = grads.pop(0)
            if need_w:
                dw += grads.pop(0)
            if need_b:
                db += grads.pop(0)
        return (dh, None if dw is None else dw.to(weight.dtype), None if db is None else db.to(bias.dtype),
                *none)


def target_logps(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                 chunk_size: int | None = None) -> torch.Tensor:
    """log p(target) at each position, through ``model``'s output head, in chunks.

    Args:
        model: the ``*ForCausalLM`` whose output embeddings (and logit transforms,
            :func:`scale_logits`) score ``hidden``.
        hidden: (positions, hidden) final hidden states, one per target.
        targets: (positions,) token ids.
        chunk_size: positions per chunk; None: :func:`auto_chunk_size` of the vocabulary.

    Returns:
        (positions,) fp32 log-probabilities, differentiable w.r.t. ``hidden`` and
        any trainable head parameter. Under autocast the head runs in the
        autocast dtype, as an unchunked autocast ``lm_head`` would.

    Raises:
        ValueError: ``chunk_size`` below 1.
    """
    head = model.get_output_embeddings()
    device = hidden.device.type
    chunk = chunk_size or auto_chunk_size(getattr(head, "out_features", None) or head.weight.shape[0], device)
    if chunk < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk}")
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    config = model.config

    def transform(logits: torch.Tensor) -> torch.Tensor:
        return scale_logits(config, logits)

    rows = _trainable_token_rows(head)
    plain = transform(probe := torch.zeros(1, 1)) is probe
    if (rows is not None and plain and torch.is_grad_enabled() and rows[2].requires_grad
            and hidden.shape[0] * rows[1].shape[0] <= ROWS_GRAD_ELEMENTS):
        with torch.autocast(device, enabled=False):
            return _RowsTargetLogps.apply(hidden, rows[0], rows[2], rows[1], targets, chunk, dtype)
    weight, bias = head.weight, getattr(head, "bias", None)  # a trainable-tokens head: the merged weight
    with torch.autocast(device, enabled=False):
        return _ChunkedTargetLogps.apply(hidden, weight, bias, targets, chunk, transform, dtype)


class TargetLoss(nn.Module):
    """Wraps a causal LM; ``forward`` returns the summed cross-entropy over target tokens.

    Returning a sum (and leaving the division to the caller) is what makes
    gradient accumulation exact: the loop divides every micro-batch's sum by the
    number of target tokens in the whole optimizer step.
    """

    def __init__(self, model: nn.Module, chunk_size: int | None = None):
        super().__init__()
        self.model, self.chunk_size = model, chunk_size

    def forward(
        self,
        input_ids: torch.Tensor,  # (batch, seq)
        labels: torch.Tensor,  # (batch, seq), IGNORE where no loss
        attention_mask: torch.Tensor | None = None,  # (batch, seq); None for packed rows
        position_ids: torch.Tensor | None = None,  # (batch, seq); restarts at 0 per packed example
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inner = unwrap(self.model)
        backbone = getattr(inner, inner.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (batch, seq, hidden)
        # Position t predicts token t+1: shift labels left, drop the last hidden state.
        targets = labels[:, 1:]
        mask = targets.ne(IGNORE)  # (batch, seq-1)
        picked = hidden[:, :-1][mask]  # (n_targets, hidden)
        loss_sum = -target_logps(inner, picked, targets[mask], self.chunk_size).sum()
        return loss_sum, mask.sum()


def count_targets(labels: torch.Tensor) -> int:
    """Number of target tokens in a batch of labels (after the causal shift)."""
    return int(labels[:, 1:].ne(IGNORE).sum())
