"""Datasets: settings (``data.settings``, light) and what is built from them (``data.loaders``).

This package imports nothing itself, so composing a config does not load torch.
"""
