"""The paper's tables and figures, from the results table only (nothing is re-run).

``python -m acm_exp.figures [column=value ...] out=DIR [include_subsets=true]`` writes, for the
filtered table's complete evaluations (``include_subsets=true`` adds those limited by ``eval.limit``,
each shown as a model pair of its own, ``toy (eval.limit=3)``; ``acm_exp.coverage``):

- ``main_table.{csv,md,tex}``: Table 1 of the L2S papers. One row per input model (base,
  fine-tuned; deduplicated over the runs that evaluated them) and per merge configuration; per
  benchmark the accuracy (mean over seeds, ±std with several) and mean response tokens, the
  average accuracy and the relative change of the average tokens against the fine-tuned model;
  each benchmark's column header names the questions its numbers rest on (``GSM8K (n=1319)``; a
  benchmark evaluated with several n gets a column per n, never their mean).
  ``main_table.csv`` has ``p_vs_base``; the ``.md``/``.tex`` show it as a "p vs base" column when
  some ACM row has a base-method row: the paired-bootstrap p-value of the ACM row's average
  against it (the largest one when it has several bases; "–" for other rows or without samples).
- ``significance.{csv,md,tex}``, when some ACM entry has a base entry: is
  ACM better than the plain method it weights (``acm_exp.merge.get_method(m).plain``, e.g.
  ACM-TIES vs TIES)? The base entries of an ACM entry are the merges of the same model pair with
  that method; among several, those with the ACM entry's k/p/scale/combine and eval.limit, else all
  of them.
  Per benchmark both evaluated and for their average: n questions, both accuracies (per question
  the mean correctness over each entry's seeds, read from the ``samples_path`` files), the
  difference in points, the paired-bootstrap and sign-test p-values and the wins/losses
  (``acm_exp.significance``; 10,000 resamples, seed 0). The average tests the mean of the
  per-benchmark accuracies (resampling within benchmarks). Missing samples files leave that row's
  numbers empty with a note, logged in one line; they never stop the command. The p-values are
  not corrected for multiple comparisons.
- ``t_sensitivity``, ``calibration_size``, ``cluster_count``, ``layer_coefficients`` and
  ``pareto`` as ``.csv`` (the plotted numbers) + ``.png`` + ``.pdf``.
- ``cost_table.{csv,md,tex,png,pdf}``: per method and model pair, what the coefficients, the merge
  and the evaluation cost.

Every table's ``.md`` opens with a line stating its cell format (its ``.tex`` with the same line as a
comment). A figure or table whose runs the table lacks is skipped with one line naming what is
missing (and the subsets left out, when there were any); the command fails only when it produced
nothing. Outputs are byte-identical for the same table.

Averages in the plots are taken over the benchmarks that every plotted point of the model pair
has (named in the CSV with their n, and in the plot's title), so points stay comparable when some
runs evaluated more benchmarks.

Modules: ``entries`` (rows -> entries, labels, statistics), ``tables`` (main table, significance),
``sweeps`` (b-d), ``coefficients`` (e), ``pareto`` (f), ``cost_table``, ``output`` (files),
``command`` (the command line and ``make_figures``).
"""

from acm_exp.figures.command import FIGURES, Outcome, main, make_figures
from acm_exp.figures.entries import Entries, build_entries, method_label
from acm_exp.figures.pareto import pareto_front
from acm_exp.figures.tables import NO_SAMPLES, SIGNIFICANCE_COLUMNS, base_matches

__all__ = [
    "FIGURES",
    "NO_SAMPLES",
    "SIGNIFICANCE_COLUMNS",
    "Entries",
    "Outcome",
    "base_matches",
    "build_entries",
    "main",
    "make_figures",
    "method_label",
    "pareto_front",
]
