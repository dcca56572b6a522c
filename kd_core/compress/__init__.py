"""Compress: search for the smallest fast student that keeps the teacher's accuracy (issue 13).

An Optuna study over student designs and distillation settings (space.py), hardware-aware by
measurement (measure.py: latency under the target runtime before training), stored beside the
run store (study.py), run in-process or on Ray (search.py), read back as rows (results.py) and
run as a dashboard job (runner.py)."""
