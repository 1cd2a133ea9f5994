"""The study wing: the Optuna study that drives training.

storage (URL -> storage, one-line storage errors), study (sampler, pruner, create / find /
load, best feasible trial), budget (the shared trial budget), objective (one trial), drive
(both trial loops and the heartbeat under one budget gate), notes (what a trial and a study
write for the dashboard), results (the stored test figure), artifacts (trials' weights),
workers (``--workers``), figures (the report's), verify (test set and replays).
"""
