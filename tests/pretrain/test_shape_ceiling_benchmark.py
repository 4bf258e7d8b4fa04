"""benchmarks/shape_ceiling.py runs end to end at a few steps and prints one table row per budget."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "shape_ceiling.py"


def test_shape_ceiling_prints_a_row_per_budget():
    proc = subprocess.run([sys.executable, str(BENCH), "--steps", "2,3", "--n-val", "6", "--width", "24",
                           "--radius", "0.2,0.3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "radius (0.2, 0.3)" in lines[0] and "chance: object-patch accuracy 12.5%" in lines[0]
    rows = [line for line in lines if line.startswith("| 2 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and all(line.count("%") == 3 for line in rows)
