"""How a run is launched, read from an accelerate config (and its DeepSpeed json): processes, ZeRO stage, offload."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from audio_recipes.errors import RecipeError

# DeepSpeed's own defaults where a json leaves a ZeRO-3 setting out or "auto" (the Trainer fills "auto" from the
# hidden size: prefetch 0.9 h^2, persistence threshold 10 h)
STAGE3_MAX_LIVE_PARAMETERS = 1e9


@dataclass(frozen=True)
class Launch:
    """One run's processes and sharding."""

    config_file: str | None = None
    num_processes: int = 1
    zero_stage: int = 0  # 0: no DeepSpeed (one process or DDP)
    offload_optimizer: bool = False
    offload_parameters: bool = False
    stage3_max_live_parameters: float = STAGE3_MAX_LIVE_PARAMETERS
    distributed_type: str | None = None  # the accelerate config's, where it names one

    @property
    def description(self) -> str:
        where = Path(self.config_file).name if self.config_file else "no accelerate config"
        sharding = f"DeepSpeed ZeRO-{self.zero_stage}" if self.zero_stage else (
            "DDP" if self.num_processes > 1 else "no sharding")
        offload = " (optimizer offloaded to CPU)" if self.offload_optimizer else ""
        if self.distributed_type not in (None, "NO", "MULTI_GPU", "DEEPSPEED"):  # FSDP, ...: its sharding not modelled
            sharding = f"{self.distributed_type}, planned as DDP (its sharding is not modelled: an overestimate)"
        return f"{where}: {self.num_processes} process(es), {sharding}{offload}"


def _number(value, default: float) -> float:
    return default if value in (None, "auto") else float(value)


def read_launch(config_file: str | None, num_processes: int | None = None) -> Launch:
    """The launch an accelerate config describes; `num_processes` overrides its count (as accelerate's flag does)."""
    if config_file is None:
        return Launch(num_processes=1 if num_processes is None else num_processes)
    path = Path(config_file)
    if not path.is_file():
        raise RecipeError(f"accelerate config not found: {config_file}")
    config = yaml.safe_load(path.read_text()) or {}
    processes = int(config.get("num_processes", 1)) if num_processes is None else num_processes
    deepspeed = config.get("deepspeed_config") or {}
    if config.get("distributed_type") != "DEEPSPEED":
        return Launch(config_file=str(config_file), num_processes=processes,
                      distributed_type=config.get("distributed_type"))
    zero: dict = {}
    if deepspeed.get("deepspeed_config_file"):
        json_path = Path(deepspeed["deepspeed_config_file"])
        if not json_path.is_file():
            json_path = path.parent / json_path.name if (path.parent / json_path.name).is_file() else json_path
        if not json_path.is_file():
            raise RecipeError(f"{config_file} names DeepSpeed config {deepspeed['deepspeed_config_file']}, not found")
        zero = json.loads(json_path.read_text()).get("zero_optimization", {})
    else:  # the settings inline in the accelerate config
        zero = {"stage": deepspeed.get("zero_stage", 0),
                "offload_optimizer": {"device": deepspeed.get("offload_optimizer_device", "none")},
                "offload_param": {"device": deepspeed.get("offload_param_device", "none")}}
    return Launch(
        config_file=str(config_file),
        num_processes=processes,
        zero_stage=int(zero.get("stage", 0)),
        offload_optimizer=(zero.get("offload_optimizer") or {}).get("device", "none") not in ("none", None),
        offload_parameters=(zero.get("offload_param") or {}).get("device", "none") not in ("none", None),
        stage3_max_live_parameters=_number(zero.get("stage3_max_live_parameters"), STAGE3_MAX_LIVE_PARAMETERS),
        distributed_type="DEEPSPEED",
    )
