# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""Forward calls: texts grouped by length, or packed several to a row with each text attending only to
itself (a block-diagonal mask, or `varlen_sdpa_attention` on each text's span). Part of the remote code."""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
import transformers
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.utils import is_flash_attn_2_available

from .encoding_settings import check_positive_integer

#: Default cap on the tokens of one forward call, padding included; see `length_groups`.
DEFAULT_MAX_BATCH_TOKENS = 2048


def length_groups(lengths: Sequence[int], max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """Groups row indices for batching: longest first, at most ``max_rows`` rows and ``max_tokens`` tokens
    (rows × longest row, i.e. padding included) per group; a row longer than ``max_tokens`` gets its own group.

    Grouping by token count rather than by row count keeps the padding of a mixed-length corpus small: with
    LLM2Vec's 512-token limit a batch of 32 rows can be mostly padding, which costs as much as real tokens.
    Ties keep their input order, so grouping is deterministic.
    """
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_BATCH_TOKENS
    check_positive_integer("max_batch_tokens", max_tokens)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is None or len(group) >= max_rows or (len(group) + 1) * lengths[group[0]] > max_tokens:
            groups.append([i])
        else:
            group.append(i)
    return groups


def forward_in_length_groups(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_tokens: int | None = None,
    packing: bool | None = None,
) -> torch.Tensor:
    """``last_hidden_state`` of a padded batch, computed in the forward calls `encode_with` would make for its
    rows (`packed_groups`: packed rows where exact, else groups of similar length, each cut to its own longest
    row). As in one padded call, the states at padded positions mean nothing (here they are zero or the model's
    output there).

    The vectors do not change beyond float rounding: padded positions are masked out of attention and pooling,
    and rotary position embeddings depend only on the distance between tokens, so moving a text within a row
    (dropping left padding, or packing it after other texts with positions restarting at 0) leaves attention
    scores as they were. Masks that are not one contiguous block per row (never produced by `collate`) run as
    one call, as given.
    """
    rows_total, width = attention_mask.shape
    lengths = attention_mask.sum(1)
    positions = torch.arange(width, device=attention_mask.device)
    mask = attention_mask.bool()
    # One contiguous block of real tokens per row, wherever it sits: left or right padding, or both (the rows
    # sentence-transformers concatenates from two columns padded on the left, then to the wider column's width).
    starts = mask.int().argmax(1, keepdim=True)
    if not bool((mask == ((positions >= starts) & (positions < starts + lengths.unsqueeze(1)))).all()):
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    calls = packed_groups(model, lengths.tolist(), rows_total, max_tokens, packing)
    if len(calls) == 1 and len(calls[0]) == rows_total:
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    additive = getattr(model.config, "_attn_implementation", None) == "eager"
    dtype = next(model.parameters()).dtype
    states: dict[int, torch.Tensor] = {}
    for rows in calls:
        group = [i for row in rows for i in row]
        if len(group) > len(rows):
            texts = {i: input_ids[i][mask[i]].tolist() for i in group}
            packed = packed_batch(int(input_ids[0, 0]), texts, rows, dtype, additive, runs_varlen(model))
            states.update(zip(group, forward_packed(model, packed, input_ids.device)))
            continue
        # one text per row, right-aligned and cut to the group's longest
        longest = int(lengths[group[0]])
        ids = input_ids.new_full((len(group), longest), int(input_ids[0, 0]))
        group_mask = attention_mask.new_zeros((len(group), longest))
        for j, i in enumerate(group):
            ids[j, : int(lengths[i])] = input_ids[i][mask[i]]
            group_mask[j, : int(lengths[i])] = 1
        hidden = model(input_ids=ids, attention_mask=group_mask).last_hidden_state
        # per row through `split`: a slice of the whole batch per text would write its whole gradient per text
        states.update((i, row[0, : int(lengths[i])]) for i, row in zip(group, hidden.split(1)))
    # One write of every text's states: a write per text would make the backward pass copy the whole gradient
    # once per text.
    ordered = torch.cat([states[i] for i in range(rows_total)])
    hidden_states = ordered.new_zeros(rows_total, width, ordered.shape[-1])
    hidden_states[mask] = ordered
    return hidden_states


def forward_padding_free(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         max_tokens: int | None = None) -> torch.Tensor:
    """``last_hidden_state`` of a padded batch, computed on its real tokens only: `forward_in_length_groups`, so
    texts share packed rows where calls attend per text (`runs_varlen`; texts longer than a sliding window, and
    models without per-text attention, run in groups of similar length), in calls of at most ``max_tokens``
    (default `DEFAULT_MAX_BATCH_TOKENS`; a longer text gets a call of its own). Differentiable; the training path
    of the sentence-transformers module. The states at real tokens equal one padded call's up to float rounding;
    at padded positions they are zero.

    Why a cap, when one call for the whole batch would do: under gradient checkpointing the backward pass rebuilds
    one call's layer at a time, so that working set follows the largest call. Uncapped, a supervised batch of 64
    records (~40k tokens at E5's lengths) rebuilds a 7B layer for all of them at once, about 8 GB in bf16; capped,
    its share is a few hundred MB, and calls of 2048 tokens still fill a GPU's matrix units.

    Below the cap the budget is the batch's real tokens: one packed row holds them all, and groups of similar
    length (no per-text attention) are cut so that their padding stays within what packing would not have."""
    cap = DEFAULT_MAX_BATCH_TOKENS if max_tokens is None else max_tokens  # None: a module that was never given one
    budget = min(cap, max(int(attention_mask.sum()), attention_mask.shape[1]))
    return forward_in_length_groups(model, input_ids, attention_mask, max_tokens=budget)


#: Attention backends that take a prepared 4D mask as given (transformers returns a 4D mask unchanged): sdpa reads
#: it as booleans, eager adds it to the scores. Flash-attention and flex get padded batches (see `packed_groups`).
#: The attention function of packed sdpa calls (registered with transformers' `AttentionInterface`): sdpa on each
#: text's own span: on CPU one masked call over a packed row computes the whole row's scores, most of them masked
#: (docs/architecture.md, "Packed rows"). Without spans it is sdpa, with sdpa's masks, so that a model may keep it
#: for all its calls (`use_varlen_attention`).
VARLEN_ATTENTION = "llm2vec_varlen_sdpa"
PACKED_ATTENTION_BACKENDS = ("sdpa", "eager", VARLEN_ATTENTION)
#: Default least width of a packed row; see `pack_rows`.
DEFAULT_PACKED_ROW_TOKENS = 128


def attends_both_ways(model: torch.nn.Module) -> bool:
    """Whether ``model`` runs bidirectional attention (``config.is_causal`` False, as `make_config_bidirectional`
    sets it); packed rows and per-text attention compute exactly that, so only such models are packed."""
    return getattr(getattr(model, "config", None), "is_causal", True) is False


def packable_length(model: torch.nn.Module) -> int:
    """The longest text that may share a row with other texts and keep its exact vector (0: none may).

    Packing needs a backend that takes a block-diagonal mask as given (`PACKED_ATTENTION_BACKENDS`). A sliding
    window (Mistral, Gemma2, Qwen2's sliding layers) is a mask transformers builds from positions in the row, which
    a prepared mask replaces, so only texts no longer than the window are packed: within them the window masks
    nothing, unpacked or packed. Softcapping (Gemma2) acts on scores before the mask and needs no care.
    A causal model (a baseline loaded with ``enable_bidirectional=False``) is never packed: packed rows attend
    both ways within each text.
    """
    config = getattr(model, "config", None)
    if not attends_both_ways(model) or getattr(config, "_attn_implementation", None) not in PACKED_ATTENTION_BACKENDS:
        return 0
    windows = [getattr(config, key, None) for key in ("sliding_window", "attention_chunk_size")]
    windows = [w for w in windows if isinstance(w, int) and not isinstance(w, bool) and w > 0]
    return min(windows) if windows else 1 << 62


def pack_rows(lengths: Sequence[int], row_tokens: int, max_tokens: int, max_texts: int) -> list[list[list[int]]]:
    """Packs text indices into rows and rows into forward calls: ``calls[c][r]`` lists the texts of row ``r``.

    First-fit decreasing: longest first, each text into the first row of the current call that has room. A row
    holds as many tokens as the call's first (longest) text, or ``row_tokens`` if that is more, and at most
    ``max_tokens``; a call at most ``max_tokens`` tokens counting the padding at row ends (rows × widest row) and
    ``max_texts`` texts. Attention costs rows × width² whatever the mask, so a row is no wider than the padded
    batch of the same texts would be (or ``row_tokens``, which lets very short texts share rows); the padding is
    left only at the ends of rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    calls: list[list[list[int]]] = []
    fills: list[int] = []
    capacity = 0
    texts_in_call = 0
    for i in order:
        length = lengths[i]
        rows = calls[-1] if calls else None
        if rows is not None and texts_in_call < max_texts:
            widest = max(fills)
            row = next((r for r, fill in enumerate(fills) if fill + length <= capacity
                        and len(rows) * max(widest, fill + length) <= max_tokens), None)
            if row is not None:
                rows[row].append(i)
                fills[row] += length
                texts_in_call += 1
                continue
            if (len(rows) + 1) * max(widest, length) <= max_tokens:
                rows.append([i])
                fills.append(length)
                texts_in_call += 1
                continue
        calls.append([[i]])
        fills = [length]
        capacity = min(max(length, row_tokens), max_tokens)
        texts_in_call = 1
    return calls


def packed_groups(
    model: torch.nn.Module,
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int | None = None,
    packing: bool | None = None,
    row_tokens: int | None = None,
) -> list[list[list[int]]]:
    """The forward calls of `encode_with`, as `pack_rows` returns them: packed rows for the texts that pack
    exactly (`packable_length`), one text per row (`length_groups`) for the others. ``packing`` None packs where
    calls attend per text (`runs_varlen`), the case that was measured faster; True packs with masked rows too
    (eager, soft-capped or compiled models), where it measured no faster than padded groups; False never packs."""
    max_tokens = DEFAULT_MAX_BATCH_TOKENS if max_tokens is None else max_tokens
    if row_tokens is None:  # with per-text attention a row's width costs nothing: one row per call
        row_tokens = max_tokens if runs_varlen(model) else DEFAULT_PACKED_ROW_TOKENS
    for name, value in (("max_batch_tokens", max_tokens), ("packed_row_tokens", row_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    packing = None if packing is None else bool(packing)
    limit = packable_length(model) if packing or (packing is None and runs_varlen(model)) else 0
    if packing is True and limit == 0 and not attends_both_ways(model):
        raise ValueError("packing=True needs a bidirectional model (config.is_causal False): packed rows attend "
                         "both ways within each text")
    if packing is True and limit == 0:
        raise ValueError(
            f"packing=True needs attention implementation {' or '.join(PACKED_ATTENTION_BACKENDS)}, not "
            f"{getattr(model.config, '_attn_implementation', None)!r}; load with attn_implementation='sdpa'"
        )
    packed = [i for i, length in enumerate(lengths) if length <= limit]
    padded = [i for i, length in enumerate(lengths) if length > limit]
    calls = [[[packed[i] for i in row] for row in rows]
             for rows in pack_rows([lengths[i] for i in packed], row_tokens, max_tokens, batch_size)]
    calls += [[[padded[i]] for i in group]
              for group in length_groups([lengths[i] for i in padded], batch_size, max_tokens)]
    return calls


def packed_batch(pad_id: int, input_ids: list, rows: list[list[int]], dtype: torch.dtype, additive: bool,
                 varlen: bool = False) -> dict:
    """One forward call of packed rows: ``input_ids`` and ``position_ids`` (restarting at 0 for every text) of shape
    (rows, width), and a (rows, 1, width, width) mask where a token sees exactly the tokens of its own text; the
    padding at a row's end sees itself only (a fully masked query row would give NaN in sdpa). Boolean for sdpa,
    additive (0 / dtype's min) for eager. ``spans`` gives each text's (row, start, length), in ``rows`` order."""
    width = max(sum(len(input_ids[i]) for i in row) for row in rows)
    ids, positions, segments, spans = [], [], [], []
    for r, row in enumerate(rows):
        start = len(ids)
        for segment, i in enumerate(row):
            length = len(input_ids[i])
            spans.append((r, len(ids) - start, length))
            ids.extend(input_ids[i])
            positions.extend(range(length))
            segments.extend([segment] * length)
        padding = start + width - len(ids)
        ids.extend([pad_id] * padding)
        positions.extend([0] * padding)
        segments.extend([-1] * padding)
    ids = torch.tensor(ids, dtype=torch.long).view(len(rows), width)
    positions = torch.tensor(positions, dtype=torch.long).view(len(rows), width)
    segments = torch.tensor(segments, dtype=torch.long).view(len(rows), width)
    if varlen:  # `varlen_sdpa_attention` reads the spans instead of a mask
        return {"input_ids": ids, "position_ids": positions, "spans": spans, "varlen": True}
    mask = (segments.unsqueeze(2) == segments.unsqueeze(1)).unsqueeze(1)
    if additive:
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": positions, "attention_mask": mask, "spans": spans}


def row_segments(spans, rows: int, width: int) -> list[tuple[list[int], list[bool]]]:
    """Each of the ``rows`` rows of a packed batch of ``width`` cut into its spans ``(row, start, length)`` and the
    gaps around them, left to right: per row, the segments' sizes (for ``Tensor.split``) and whether each is a
    span. One pass over the spans (`packed_batch` lists each row's spans left to right)."""
    segments: list[tuple[list[int], list[bool]]] = [([], []) for _ in range(rows)]
    ends = [0] * rows
    for row, start, length in spans:
        sizes, is_span = segments[row]
        if start > ends[row]:
            sizes.append(start - ends[row])
            is_span.append(False)
        sizes.append(length)
        is_span.append(True)
        ends[row] = start + length
    for (sizes, is_span), end in zip(segments, ends):
        if end < width:
            sizes.append(width - end)
            is_span.append(False)
    return segments


def varlen_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention within each span ``(row, start, length)`` of ``llm2vec_spans``, with no mask; positions outside
    every span get zeros. On CUDA with flash-attention installed, one row tiled by its spans runs flash-attention's
    varlen kernel; otherwise sdpa runs on each span. Without ``llm2vec_spans``: transformers' sdpa attention. Same
    signature and output layout, (batch, length, heads, head_dim), as transformers' sdpa attention; differentiable."""
    spans = kwargs.pop("llm2vec_spans", None)
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, width = query.shape[0], query.shape[2]
    lengths = [length for _, _, length in spans]
    # flash-attention needs values as wide as queries (latent attention's are narrower)
    if (query.is_cuda and batch == 1 and sum(lengths) == width and value.shape[-1] == query.shape[-1]
            and is_flash_attn_2_available()):
        return _flash_varlen_attention(module, query, key, value, lengths, dropout, scaling), None
    groups = query.shape[1] // key.shape[1]
    outputs = []
    for (sizes, is_span), *row_tensors in zip(row_segments(spans, batch, width), query.split(1), key.split(1),
                                              value.split(1)):
        # `split` rather than a slice per row and span: a slice's backward writes the whole row's gradient once
        # per span, `split`'s concatenates once. Pieces keep the batch axis: sdpa's fused CPU kernel (no score
        # matrix kept for the backward) takes 4-D inputs only; 3-D ones run the unfused math path.
        pieces = zip(*(t.split(sizes, dim=2) for t in row_tensors), is_span)
        # One concatenation per row rather than writes into a zero tensor, for the same reason as `split`.
        outputs.append(torch.cat([
            torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling,
                                                             enable_gqa=groups > 1)
            if real else q.new_zeros(*q.shape[:3], value.shape[-1])
            for q, k, v, real in pieces
        ], dim=2))
    output = torch.cat(outputs)
    return output.transpose(1, 2).contiguous(), None


def _flash_varlen_attention(module, query, key, value, lengths: list[int], dropout: float, scaling):
    """flash-attention's varlen kernel over one row holding texts of ``lengths`` back to back (through transformers'
    own flash-attention call, which also casts float32 inputs to the model's half-precision dtype)."""
    from transformers.integrations.flash_attention import get_target_dtype
    from transformers.modeling_flash_attention_utils import _flash_attention_forward

    cumulative = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=query.device)
    return _flash_attention_forward(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), None, query_length=query.shape[2],
        is_causal=False, dropout=dropout, softmax_scale=scaling, cu_seq_lens_q=cumulative,
        cu_seq_lens_k=cumulative, max_length_q=max(lengths), max_length_k=max(lengths),
        target_dtype=get_target_dtype(query, module), attn_implementation="flash_attention_2",
    )


transformers.AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)


def use_varlen_attention(model: torch.nn.Module) -> bool:
    """Chooses `VARLEN_ATTENTION` as ``model``'s attention, once, when it is loaded or staged for training, for a
    bidirectional sdpa model without softcapping (sdpa has none; Gemma2 keeps the masked rows of eager); returns
    whether it did. The kernel is then chosen by the config, as transformers chooses every kernel: no forward call
    changes it, and gradient checkpointing, which recomputes a layer after `forward_packed` has returned, finds
    the same attention. Without spans the kernel is sdpa, so every other call is unchanged."""
    config = model.config
    if config._attn_implementation == VARLEN_ATTENTION:
        return True
    if not (attends_both_ways(model) and config._attn_implementation == "sdpa"
            and getattr(config, "attn_logit_softcapping", None) is None):
        return False
    model.set_attn_implementation(VARLEN_ATTENTION)
    return True


def runs_varlen(model: torch.nn.Module) -> bool:
    """Whether packed calls of ``model`` attend per text (`varlen_sdpa_attention`): models set up by
    `use_varlen_attention`, unless compiled (a list of spans would recompile every call)."""
    return (attends_both_ways(model) and getattr(model.config, "_attn_implementation", None) == VARLEN_ATTENTION
            and getattr(model, "_compiled_call_impl", None) is None)


def forward_packed(model: torch.nn.Module, batch: dict, device: torch.device) -> list[torch.Tensor]:
    """Runs one `packed_batch` and returns each text's own token states, (length, hidden), in ``spans`` order."""
    inputs = {"input_ids": batch["input_ids"].to(device), "position_ids": batch["position_ids"].to(device)}
    if batch.get("varlen"):
        if not runs_varlen(model):  # any other kernel would ignore the spans and attend across texts
            raise ValueError("a per-text packed batch needs a model that runs varlen_sdpa_attention "
                             "(use_varlen_attention); build the batch with varlen=runs_varlen(model)")
        # A mask of ones: transformers builds no mask for it, where with none it would build one from the
        # restarting positions, a (width, width) mask that the spans make useless.
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        hidden = model(**inputs, llm2vec_spans=batch["spans"]).last_hidden_state
    else:
        hidden = model(**inputs, attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    # `split` rather than a slice per text: a slice's backward writes the whole batch's gradient once per text.
    states = []
    for (sizes, is_span), row_states in zip(row_segments(batch["spans"], hidden.shape[0], hidden.shape[1]),
                                            hidden.unbind()):
        states.extend(piece for piece, real in zip(row_states.split(sizes), is_span) if real)
    return states


def unpack_to_padded(states: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token states of texts (each its own length) laid out as the padded ``batch`` from `collate`, for `pool`."""
    attention_mask = batch["attention_mask"]
    hidden = states[0].new_zeros(attention_mask.shape[0], attention_mask.shape[1], states[0].shape[-1])
    mask = attention_mask.bool().to(hidden.device)
    hidden[mask] = torch.cat(states)
    return hidden
