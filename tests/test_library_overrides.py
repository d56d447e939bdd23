"""The private TRL and transformers methods the project overrides keep the signatures it was written against.

AudioGRPOTrainer and AudioSFTTrainer override private methods (requirements.txt pins the minor versions they were
tested on). A library upgrade that changes one of them must stop here, with the method named, instead of training
without audio or resuming without weights."""

import inspect
from pathlib import Path

import pytest
import transformers
import trl
from trl import GRPOTrainer, SFTTrainer

from audio_recipes.pipelines.grpo import AudioGRPOTrainer
from audio_recipes.pipelines.sft import AudioSFTTrainer

# (library class, our subclass, method, the library's parameters as the override expects them)
OVERRIDDEN = [
    (GRPOTrainer, AudioGRPOTrainer, "_generate_and_score_completions", ["self", "inputs"]),
    (GRPOTrainer, AudioGRPOTrainer, "_tokenize_prompts", ["self", "prompts"]),
    (GRPOTrainer, AudioGRPOTrainer, "_compute_loss", ["self", "model", "inputs"]),
    (GRPOTrainer, AudioGRPOTrainer, "_get_per_token_logps_and_entropies",
     ["self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
      "compute_aux_loss", "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
      "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids"]),
    (SFTTrainer, AudioSFTTrainer, "_save_checkpoint", ["self", "model", "trial"]),
    (SFTTrainer, AudioSFTTrainer, "_load_from_checkpoint", ["self", "resume_from_checkpoint", "model"]),
    (GRPOTrainer, AudioGRPOTrainer, "_load_from_checkpoint", ["self", "resume_from_checkpoint", "model"]),
    # It also reads TRL's private _total_train_tokens and _metrics (a packed Omni batch's token count)
    (SFTTrainer, AudioSFTTrainer, "compute_loss", ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]),
    # SFTTrainer.training_step(*args, **kwargs) passes them on to transformers' Trainer.training_step
    (transformers.Trainer, AudioSFTTrainer, "training_step", ["self", "model", "inputs", "num_items_in_batch"]),
]


@pytest.mark.parametrize(("library_class", "ours", "method", "expected"), OVERRIDDEN,
                         ids=[f"{ours.__name__}.{method}" for _, ours, method, _ in OVERRIDDEN])
def test_overridden_library_methods_keep_their_signatures(library_class, ours, method, expected):
    # Ours or a mixin of ours (FullWeightsResume): a class of this project's in the method resolution order
    overriding = [cls for cls in ours.__mro__ if cls.__module__.startswith("audio_recipes.")]
    assert any(method in vars(cls) for cls in overriding), f"{ours.__name__} no longer overrides {method}: update " \
        "OVERRIDDEN"
    parent = next(cls for cls in library_class.__mro__ if method in vars(cls))
    found = list(inspect.signature(getattr(parent, method)).parameters)
    assert found == expected, (
        f"{parent.__module__}.{parent.__name__}.{method} now takes ({', '.join(found)}), not ({', '.join(expected)}) "
        f"(trl {trl.__version__}, transformers {transformers.__version__}): {ours.__name__} overrides it; check the "
        "override against the new code before widening the pin in requirements.txt"
    )
    ours_parameters = inspect.signature(getattr(ours, method)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours_parameters.values())
    missing = [name for name in expected if name not in ours_parameters and not takes_any]
    assert not missing, f"{ours.__name__}.{method} does not take {', '.join(missing)}"


def test_the_installed_minor_versions_are_the_pinned_ones():
    """requirements.txt pins the minors the overrides are tested on (`name>=X.Y,<X.Y+1`); a drifted install fails
    here first."""
    import re
    from importlib.metadata import version

    requirements = (Path(__file__).resolve().parents[1] / "requirements.txt").read_text()
    for name in ("trl", "transformers", "peft"):
        pin = re.search(rf"^{name}>=(\d+)\.(\d+)(?:\.\d+)?,<(\d+)\.(\d+)\s*$", requirements, re.M)
        assert pin, f"requirements.txt pins no minor version of {name} (`{name}>=X.Y,<X.Y+1`)"
        low, high = (int(pin[1]), int(pin[2])), (int(pin[3]), int(pin[4]))
        installed = tuple(int(part) for part in version(name).split(".")[:2])
        assert low <= installed < high, f"{name} {version(name)} is installed; requirements.txt allows {pin[0]}"
