"""The Trainer loop, its settings, checkpoints and run logs.

Import what you need from its modules (``trainer.trainer.Trainer``, ``trainer.config``): this
package imports nothing itself, so reading the settings does not load torch.
"""
