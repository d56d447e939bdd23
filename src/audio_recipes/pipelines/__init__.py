"""What the scripts run: SFT, GRPO, ReST, evaluation, seeds, inspection, MMLU-Redux, the demo report."""
