"""What the scripts share and nothing runs on its own: app.py (the scripts as Hydra apps), runs.py
(a run rebuilt from its checkpoint)."""
