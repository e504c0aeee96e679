"""benchmarks/gpu_check.py at its CPU smoke size, as CI runs it: all checks pass, halving too."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_cpu_fallback_passes_every_check_and_halves_on_out_of_memory(tmp_path):
    out = tmp_path / "gpu_check.json"
    budgets = [256, 4096]
    args = ["--device", "cpu", "--quick", "--budgets", *map(str, budgets), "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SMOKE SIZE" in proc.stdout
    result = json.loads(out.read_text())
    assert (result["device"], result["quick"]) == ("cpu", True)

    checks = {c["name"].split(": ", 1)[1]: c for c in result["checks"]}
    assert [c["status"] for c in result["checks"]] == ["PASS"] * 5
    for c in result["checks"]:
        assert f"PASS  {c['name']}" in proc.stdout
    models = {c["name"].split(": ", 1)[0] for c in result["checks"]}
    assert models == {"GPT-2 tiny (random)", "probe (trained)"}
    for c in result["checks"]:
        if "float32 engine = loop" in c["name"]:
            assert c["values"]["max_rel"] <= 1e-4
        elif "bfloat16" in c["name"]:
            assert 0 < c["values"]["mean_rel"] <= 1e-3  # rounded, but not beyond the bound

    halving = checks["out-of-memory halving (injected)"]["values"]
    assert len(halving["injected"]) >= 1
    assert halving["largest_batch_after"] <= halving["limit"] < halving["largest_batch_before"]
    assert halving["max_rel"] <= 1e-4

    rows = result["throughput"]
    assert sorted((r["model"], r["budget"]) for r in rows) == sorted(
        (m, b) for m in models for b in budgets
    )
    assert all(r["tokens_per_s"] > 0 and r["peak_bytes"] > 0 for r in rows)
    assert len({r["tokens"] for r in rows}) == 1  # every row timed the same documents
