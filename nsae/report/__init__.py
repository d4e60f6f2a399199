"""`python -m nsae.report <sweep dir>`: the sweep's results table, plots and matched-L0
comparison, written as report.md and report.html beside the sweep's jobs."""
