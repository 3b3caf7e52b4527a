"""BENCHMARKS.md stays a report: its tables match the JSON they name, its links resolve, it stays short."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results"
MAX_REPORT_LINES = 400
MAX_RESULT_FILES = 40


def test_tables_match_their_json():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_result_links_point_to_files():
    text = REPORT.read_text(encoding="utf-8")
    named = set(re.findall(r"\]\((bench/results/[^)\s]+)\)", text))  # markdown links
    named |= set(re.findall(r"bench/results/[\w.-]+\.(?:json|png)", text))  # table markers, paths in commands
    assert named, "BENCHMARKS.md names no result file"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"BENCHMARKS.md names result files that do not exist: {missing}"


def test_every_table_names_its_source():
    text = REPORT.read_text(encoding="utf-8")
    assert text.count("<!-- table: ") == text.count("<!-- /table -->") > 0


def test_report_and_results_stay_small():
    lines = len(REPORT.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_REPORT_LINES, f"BENCHMARKS.md has {lines} lines (> {MAX_REPORT_LINES})"
    files = [p for p in RESULTS.rglob("*") if p.is_file()]
    assert len(files) <= MAX_RESULT_FILES, f"bench/results holds {len(files)} files (> {MAX_RESULT_FILES})"
