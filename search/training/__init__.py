"""The training wing: seeds (every random number of a trial), train (model, optimizer, the
single-trial loop), pool (K trials as one stacked model; pure torch, no Optuna), and the
seed's own script and the benchmark's timed paths (seed_script, timing).
"""
