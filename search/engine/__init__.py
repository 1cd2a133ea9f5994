"""The engine: what runs a study.

run_study (open / create / resume, fan out to workers, confirm: one call, a typed outcome),
settle (a run's config from its flags and the stored study), strategy (which sampler and
pruner a config names), sampling and edge (the edge sampler and the constrained pruner),
expected (a trial's expected value, fitted from its neighbours), monotone (whether a trial
over the limit can still end within it, so how far over it one is stopped), objective (one
trial), drive and budget (both trial loops, the shared budget, heartbeats), workers
(``--workers``), confirm and choose (seed confirmation and the recommendation).
"""
