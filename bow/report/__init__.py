"""Reports: Markdown and CSV tables, plots."""
