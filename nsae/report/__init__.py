"""`python -m nsae.report <sweep dir>`: the sweep's sections (never mixing settings), seed
statistics, claims with verdicts, matched-L0 tables and figures, written as report.md,
report.html (self-contained) and report.json beside the sweep's run directories."""
