"""The notebook figures drawn from saved runs."""

import math


def test_intervene_figure_leaves_a_gap_for_a_method_skipped_on_one_dataset():
    """A run can skip a method on one dataset (steer without enough wrong answers): its bar is absent
    there, and every other bar is drawn at its accuracy."""
    from vlmheads.plots.figures import intervene_figure

    rows = [{"dataset": d, "method": m, "group": "all", "accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1}
            for d, m, acc in (("a", "none", 0.8), ("a", "steer", 0.3), ("b", "none", 0.9))]
    fig = intervene_figure(rows)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights[:2] == [0.8, 0.3] and heights[2] == 0.9 and math.isnan(heights[3])
