"""A training plan before the run, without weights: parameters (models.real_shapes and a model built on the meta
device), memory per GPU (memory), tokens per step (tokens) and the launch (launch); pipelines.plan puts them together
for scripts/plan.py."""
