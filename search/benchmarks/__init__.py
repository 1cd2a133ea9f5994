"""The benchmarks, above the engine: what measures the service rather than runs it.

quality (held-out grids, real and simulated studies, their regret), simulate (studies replayed
on measured curves: the real driver and sampler, no training) and truth (the curves
themselves, NumPy only, torch-free), measure (the quality benchmark's run: grids, studies,
provenance, the JSON under docs/quality/), evidence (the docs' quality tables rendered from
that JSON, torch-free) and tables (the benchmark commands' rows).
"""
