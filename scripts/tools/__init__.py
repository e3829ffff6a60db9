"""The measuring tools: benchmark.py's measures (training_step, whole_runs, reporting_cost) and
reference_loop.py, the plain PyTorch loop the framework is checked against."""
