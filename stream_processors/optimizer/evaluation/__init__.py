"""The parts of `seedloop evaluate` (optimizer/evaluate.py), one concern a module: the run's settings
(config), the hidden truth's economics and the oracle (market), how close to the reference a run is
(settling), what evidence a round carries (evidence), the in-process attribution (figure_store),
one simulated run (simulated_run, run_scores), the summary across seeds (summary), attribution scored
against the causal truth (attribution_truth) and the text report (report)."""
