"""The loop's optional behaviours, each one module behind ``base.Hook`` (Lightning's callbacks).

freeze.py (the classifier trains alone for the first epochs), max_norm.py (class rows capped
after each update), loss_epoch.py (the loss's epoch switch: DRW), gallery.py (the error gallery
of the monitored model), collapse.py (the warning for a collapsed run), early_stopping.py,
ranks.py (under DDP: whether every rank ends with the same weights).
``chosen.choose_hooks`` picks them from the settings; the loop calls them at the moments
``base.Hook`` names and knows nothing else of them.
"""
