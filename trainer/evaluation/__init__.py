"""Judging a model: what the loop and the scripts share.

metrics.py (one confusion matrix on the device: accuracy, balanced accuracy, macro-F1, ECE,
many/medium/few-shot), calibration.py (temperature scaling), reports.py (tables),
figures.py (the confusion picture), collapse.py (the warning for a collapsed run).
Nothing here imports the loop, the loggers or the shell.
"""
