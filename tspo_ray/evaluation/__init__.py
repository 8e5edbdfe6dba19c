"""Evaluation: a selector's accuracy on a split, benchmark runs in their own formats, breakdowns, plots and
statistics."""
