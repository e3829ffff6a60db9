"""A run's report: one self-contained HTML file that opens offline (``reporting.page``)."""
