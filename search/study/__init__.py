"""The study wing: the Optuna study that drives training.

storage (URL -> storage, one-line storage errors), study (sampler, pruner, create / find /
load, ``recommended_trial``, stored settings), budget (the shared trial budget), objective
(one trial), history (a trial's per-epoch record), drive (both trial loops and the heartbeat
under one budget gate), progress (the live display), notes (what a trial and a study write
for the dashboard), results (the stored test figure), artifacts (trials' weights,
``load_best``), workers (``--workers``), figures (the report's), verify (test set and replays).
"""
