"""Hugging Face TRL recipes for fine-tuning and evaluating audio language models."""

from audio_recipes.library_noise import silence_known_harmless

__version__ = "0.1.0"

silence_known_harmless()
