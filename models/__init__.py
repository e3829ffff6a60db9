"""Models: timm classifiers with our class count, local weights and an optional cosine head.

``models.factory`` (timm) builds them; ``models.settings`` checks the ``model`` group without
importing timm. Import the module you need: this package imports nothing.
"""
