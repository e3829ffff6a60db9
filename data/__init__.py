"""Datasets: settings (``data.settings``, light) and what is built from them (``data.folders``).

This package imports nothing itself, so composing a config does not load torch.
"""
