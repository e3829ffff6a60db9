"""The shell around a training process, used by train.py only: what is set up first and torn
down last, and how a launch ends.

session.py (DDP set-up, the run directory and its lock, threads), launch.py (argv under torchrun,
exit statuses and messages), cluster.py (submitit jobs: DDP, requeue, stopping a local sweep),
sweep.py (job names, search values, failed trials), runlock.py (one process per run directory),
rundir.py (a new run never replaces an earlier one), continuity.py (a resume continues the same
experiment), registry.py (the config schemas and resolvers Hydra is given). The loop and the
evaluation never import from here.
"""
