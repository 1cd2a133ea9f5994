"""The report room: what a study looks like to a person, drawn from the record.

figures (the report's PNGs; no torch) and progress (the live bar or line per trial while a
study runs, and the step counter of the other long commands).
"""
