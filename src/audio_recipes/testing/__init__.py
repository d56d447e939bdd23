"""What the tests, the demo and the tiny recipes run on: tiny real-architecture models with random weights
(tiny_models, tiny_omni_models, tokenizer), small data sets built from what the repository carries (tiny_data) and
synthesised speech (speech_synthesis). Production code reaches it in one place only: audio_recipes.pipelines.data,
for recipes with `build_data_if_missing: true`."""
