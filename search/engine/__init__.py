"""The engine: what runs a study.

run_study (open / create / resume, fan out to workers, confirm: one call, a typed outcome),
strategy (which sampler and pruner a config names), sampling and edge (the edge sampler and the
constrained pruner), objective (one trial), drive and budget (both trial loops, the shared
budget, heartbeats), workers (``--workers``), confirm and choose (seed confirmation and the
recommendation), simulate (whole studies replayed on learning curves).
"""
