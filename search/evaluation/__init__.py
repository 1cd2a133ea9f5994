"""Evaluation: checks of a finished study that touch the data again.

verify: the recommended trial's weights on the official test set, and a trial retrained from
its recorded seed to show it reproduces bit for bit.
"""
