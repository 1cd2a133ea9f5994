"""The data wing: MNIST fetched once and verified (fetch), loaded as tensors (mnist), the
synthetic table (synthetic), the task a study picks (tasks), and what they hand up (splits).

``python -m search.data`` runs ``fetch.main`` (see ``__main__.py``).
"""
