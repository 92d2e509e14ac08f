"""The examples run to the end: each checks what it shows."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_chapter_tour_runs_to_the_end():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "chapter_tour.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("the chapter tour ran to the end")
    for n in range(1, 9):
        assert f"== {n}." in result.stdout
