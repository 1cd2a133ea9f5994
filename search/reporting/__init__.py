"""The report room: what a study looks like to a person, drawn from the record.

figures (the report's PNGs), tables (the CSV frames), trials (the records both read), progress
(the live bar or lines while a study runs) with eta (the forecast its ETA comes from, pure
arithmetic), and steps (the progress of every other long phase). No torch anywhere here.
"""
