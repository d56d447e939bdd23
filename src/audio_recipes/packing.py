"""Padding-free batches: a batch's examples joined into one row, position ids restarting at each example.

transformers builds the block-diagonal attention from position ids that restart (for sdpa and eager through
`find_packed_sequence_indices`, for flash attention as varlen sequences) when no attention mask is given, so that no
token attends across examples. The audio features stay one per clip, as in a padded batch: the encoder sees each
clip alone, and its outputs fill the placeholders of the packed row in order.

A leaf module (torch only): the GPU check builds its packed batches with it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100


def segment_positions(lengths: Sequence[int]) -> torch.Tensor:
    """0..n-1 for each segment, concatenated: [0, 1, 2, 0, 1, 0, 1, 2, 3] for lengths 3, 2, 4."""
    return torch.cat([torch.arange(length) for length in lengths]) if lengths else torch.zeros(0, dtype=torch.long)


def packed_position_ids(lengths: Sequence[int], multimodal_rope: bool = False) -> torch.Tensor:
    """Position ids of one packed row: (1, N), or (4, 1, N) for the Omni thinkers' multimodal rope.

    The Omni text models take (4, batch, N): the text positions that the mask is built from, then the temporal,
    height and width positions. For audio and text alone all four are 0..n-1 per example (the thinkers'
    `get_rope_index` gives exactly that; tests/test_packing.py checks the outputs). Given (1, N) they would not
    build the packed mask, and every token would attend across examples.
    """
    positions = segment_positions(lengths).unsqueeze(0)
    return positions.expand(4, 1, -1).clone() if multimodal_rope else positions


def pack_rows(sequences: Sequence[Sequence[int]], labels: Sequence[Sequence[int]] | None = None,
              multimodal_rope: bool = False) -> dict[str, torch.Tensor]:
    """Rows of token ids (and their labels) -> one row: `input_ids`, `position_ids` and `labels`, no attention mask.

    The first label of every example is IGNORE_INDEX, so that the last token of one example is never trained to
    predict the first of the next (the model shifts labels by one across the whole row).
    """
    lengths = [len(row) for row in sequences]
    if not lengths or min(lengths) == 0:
        raise ValueError("cannot pack an empty batch or an empty row")
    batch = {"input_ids": torch.tensor([[token for row in sequences for token in row]], dtype=torch.long),
             "position_ids": packed_position_ids(lengths, multimodal_rope)}
    if labels is not None:
        if [len(row) for row in labels] != lengths:
            raise ValueError("labels and token ids differ in length")
        joined = [label for row in labels for label in (IGNORE_INDEX, *row[1:])]
        batch["labels"] = torch.tensor([joined], dtype=torch.long)
    return batch


def segment_lengths(position_ids: torch.Tensor) -> list[int]:
    """The example lengths of a packed row, read back from its (text) position ids."""
    positions = position_ids[0] if position_ids.ndim == 3 else position_ids
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    return [end - start for start, end in zip(starts, [*starts[1:], positions.shape[-1]], strict=True)]


# ---------------------------------------------------------------- attention over each example of a packed row

PACKED_SDPA = "sdpa_packed"


def packed_lengths(position_ids: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> list[int] | None:
    """The example lengths of a packed row seen by an attention layer (one row, no cache, positions restarting);
    None for any other batch."""
    if position_ids is None or query.shape[0] != 1 or query.shape[2] != key.shape[2] or query.shape[2] < 2:
        return None
    positions = position_ids.reshape(-1, position_ids.shape[-1])[0]
    if positions.shape[0] != query.shape[2]:
        return None
    restarts = (torch.diff(positions) != 1).nonzero().flatten().add(1).tolist()
    if not restarts:
        return None
    starts = [0, *restarts]
    return [end - start for start, end in zip(starts, [*starts[1:], positions.shape[0]], strict=True)]


def packed_sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                                  is_causal=None, **kwargs):
    """sdpa on each example of a packed row alone (causal, no mask), as flash attention's varlen kernel does; any
    other batch goes to transformers' sdpa as is.

    With plain sdpa a packed row of N tokens attends through an N x N block-diagonal mask: the masked blocks are
    computed and thrown away, and the mask rules out sdpa's fused kernels, so that attention costs grow with the
    batch size squared (and on CPU the N x N weights are materialised). Per example the cost is that of the padded
    batch without its padding.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lengths = packed_lengths(kwargs.get("position_ids"), query, key)
    if lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    outputs = [
        sdpa_attention_forward(module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs)[0]
        for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2),
                           strict=True)
    ]
    return torch.cat(outputs, dim=1), None


def register_packed_sdpa() -> str:
    """Make `sdpa_packed` an attention implementation of transformers (its masks those of sdpa); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention_forward)
    AttentionMaskInterface.register(PACKED_SDPA, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return PACKED_SDPA
