"""The study record, torch-free: what a study is, in its database.

storage (URL -> Optuna storage, one-line storage errors), study (create / find / load, the
settings a resume must agree with), record (the typed record: stored config, best trial,
recommendation, test result, a trial's outcome; the only reader and writer of attributes),
history (a trial's per-epoch record), notes (the dashboard's notes, rendered from the record),
artifacts (trials' weights), backends (one class per kind of database: its rules, locks,
drivers, outages; ``locks`` holds the budget's), outage (riding out a database server's
restart), optuna_private (the one adapter over Optuna's private API).
"""
