"""Whisper-style encoders without the 30 s window: features and encoder cut to the batch's longest clip.

Qwen2-Audio's processor pads every clip to 30 s of log-mel frames (3000) and its encoder insists on that length,
although it masks the padded frames out of its attention (keys past each clip's length get -inf). So the
features of a 1 s clip cost 30 s of STFT, and the encoder runs 1500 positions of attention where 50 matter.

Cut to T frames (the batch's longest clip plus 2 frames, rounded up to a multiple of 8), every output the model
uses is the same as with 3000:
- the log-mel frames below T are those of the 30 s window: they are computed from the same samples (the zero
  padding after a clip is zero padding either way, and the STFT's reflection at the end mirrors zeros), and the
  per-clip maximum that sets the floor is the same (padded frames are all log10(1e-10));
- the encoder's convolutions reach 1 frame to each side, twice: the last valid position reads 2 frames past
  the clip, which T keeps; attention at valid positions never sees a masked key; pooling and the layer norm
  are per position. Positions past the clip are dropped by the model before the language model sees them.

Audio Flamingo 3 is built the same way (its processor pads each 30 s window to 3000 frames, its encoder masks the
padding from the feature mask, then pools by 2), so the same cut holds for it.

`allow_short_audio_windows()` replaces `Qwen2AudioEncoder.forward` and `AudioFlamingo3Encoder.forward` (class-wide,
so that every instance, the reference model that TRL builds too, accepts it) with the same computation that takes
T <= 3000 frames, adding the first T/2 position embeddings. With 3000 frames it computes exactly what the original
does.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling

FRAME_MULTIPLE = 8  # frames: even for the stride-2 convolution, whole for the pooling
FRAMES_PAST_CLIP = 2  # the encoder's two k=3 convolutions read this far past the last valid frame
_installed = False


def short_window_samples(longest_samples: int, hop_length: int, window_samples: int) -> int:
    """Samples to pad the batch's clips to: whole frames covering the longest clip plus the frames the encoder
    reads past it, a multiple of FRAME_MULTIPLE frames, at most the full window."""
    frames = math.ceil(longest_samples / hop_length) + FRAMES_PAST_CLIP
    frames = math.ceil(frames / FRAME_MULTIPLE) * FRAME_MULTIPLE
    return min(frames * hop_length, window_samples)


def _check_frames(encoder, input_features: torch.Tensor, name: str) -> None:
    longest = encoder.config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0]
    frames = input_features.shape[-1]
    if frames > longest or frames % 2:
        raise ValueError(f"{name}'s encoder takes an even number of mel frames, at most {longest}; got {frames}")


def _short_window_forward(self, input_features: torch.Tensor, attention_mask=None, **kwargs):
    """Qwen2AudioEncoder.forward for input_features of at most max_source_positions * 2 frames."""
    _check_frames(self, input_features, "Qwen2-Audio")
    input_features = input_features.to(dtype=self.conv1.weight.dtype, device=self.conv1.weight.device)
    inputs_embeds = nn.functional.gelu(self.conv1(input_features))
    inputs_embeds = nn.functional.gelu(self.conv2(inputs_embeds)).permute(0, 2, 1)
    hidden_states = inputs_embeds + self.embed_positions.weight[: inputs_embeds.shape[1]]
    hidden_states = nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
    for encoder_layer in self.layers:
        if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
            continue
        hidden_states = encoder_layer(hidden_states, attention_mask, **kwargs)
    hidden_states = self.avg_pooler(hidden_states.permute(0, 2, 1)).permute(0, 2, 1)
    return BaseModelOutput(last_hidden_state=self.layer_norm(hidden_states))


def _short_window_af3_forward(self, input_features: torch.Tensor, input_features_mask: torch.Tensor | None = None,
                              **kwargs):
    """AudioFlamingo3Encoder.forward (transformers 5.25) for input_features of at most max_source_positions * 2
    frames: the first positions' embeddings instead of all 1500."""
    from transformers.masking_utils import create_bidirectional_mask

    _check_frames(self, input_features, "Audio Flamingo 3")
    seq_len = (input_features.shape[-1] - 1) // 2 + 1  # after the stride-2 convolution
    lengths = (input_features_mask.sum(-1) - 1) // 2 + 1
    valid = torch.arange(seq_len, device=input_features.device) < lengths[:, None]
    inputs_embeds = nn.functional.gelu(self.conv1(input_features))
    inputs_embeds = nn.functional.gelu(self.conv2(inputs_embeds)).permute(0, 2, 1)
    hidden_states = inputs_embeds + self.embed_positions.weight[: inputs_embeds.shape[1]]
    hidden_states = nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
    attention_mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=valid)
    for layer in self.layers:
        if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
            continue
        hidden_states = layer(hidden_states, attention_mask)
    hidden_states = self.avg_pooler(hidden_states.permute(0, 2, 1)).permute(0, 2, 1)
    return BaseModelOutputWithPooling(last_hidden_state=self.layer_norm(hidden_states))


def allow_short_audio_windows() -> None:
    """Let Qwen2AudioEncoder and AudioFlamingo3Encoder take windows shorter than 30 s (idempotent)."""
    global _installed
    if _installed:
        return
    from transformers.models.audioflamingo3 import modeling_audioflamingo3
    from transformers.models.qwen2_audio import modeling_qwen2_audio
    from transformers.utils.generic import merge_with_config_defaults
    from transformers.utils.output_capturing import capture_outputs

    # The same decorators as the originals: config defaults, hidden states / attentions when asked for
    modeling_qwen2_audio.Qwen2AudioEncoder.forward = merge_with_config_defaults(capture_outputs(_short_window_forward))
    modeling_audioflamingo3.AudioFlamingo3Encoder.forward = merge_with_config_defaults(
        capture_outputs(_short_window_af3_forward))
    _installed = True
