"""Print the README model card's accuracy table from an organism eval run directory.

    .venv/bin/python scripts/model_card_table.py results/organism/<run_id>
"""

import csv
import json
import sys
from pathlib import Path

NAMES = {"low_level_visual_perception": "object perception (colour / shape)",
         "spatial_perception": "spatial perception (quadrant)",
         "relational_reasoning": "relational reasoning (4-way relation)",
         "decision_making": "decision (yes / no statement)"}


def main(run: Path) -> None:
    rows = list(csv.DictReader(open(run / "accuracy.csv")))
    summary = json.loads((run / "summary.json").read_text())
    by = {(r["function"], r["group"]): r for r in rows}
    print("| function | target | prior-consistent | prior-violating | neutral pairs | all | greedy generation |")
    print("|---|---|---|---|---|---|---|")
    for function, name in NAMES.items():
        cells = []
        for group in ("consistent", "violating", "neutral", "all"):
            r = by[(function, group)]
            cells.append(f"{float(r['accuracy']):.3f} [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}] (n={r['n']})")
        target = summary["targets"][function]
        gen = summary["generation_accuracy"].get(function)
        print(f"| {name} | >= {target['target']:.2f} {'met' if target['met'] else 'NOT met'} | " + " | ".join(cells)
              + f" | {gen:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
