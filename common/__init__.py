"""What every room uses and no room owns: the user-facing errors and a process's place in a run.

Nothing here imports torch, so the settings can be checked before the heavy libraries load.
"""
