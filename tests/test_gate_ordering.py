"""The stability gate orders the pair-displaced pw.x jobs through public Snakemake API only (issue 12,
item 6): a checkpoint on a pass marker keyed by the gate id, no file input on rule dft."""
import json
import re

import pytest
import yaml

from kappaflow import stability
from kappaflow.errors import KappaflowError

from conftest import REPO, mock_invocations, run_snakemake

PRIVATE = [r"\b_IOFile\b", r"workflow\.persistence", r"from snakemake\.\w+(\.\w+)* import _\w+",
           r"snakemake\.\w+\._\w+", r"workflow\._\w+"]


def test_workflow_uses_no_private_snakemake_api():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]
    hits = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            for path in files for n, line in enumerate(path.read_text().splitlines(), 1)
            if not line.lstrip().startswith("#") and any(re.search(p, line) for p in PRIVATE)]
    assert not hits, "private Snakemake API in the workflow:\n" + "\n".join(hits)
    # and no blanket except around workflow internals
    blanket = [f"{p.relative_to(REPO)}:{n}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
               if re.match(r"\s*except\s+(Exception)?\s*:", line)]
    assert not blanket, blanket


def test_pass_marker_refuses_a_stale_or_failed_verdict(tmp_path):
    verdict = {"status": "stable", "passed": True, "lowest_frequency_thz": 0.0, "source": {"gate_id": "a" * 16}}
    path = tmp_path / "stability.json"
    path.write_text(json.dumps(verdict))
    record = stability.write_pass_marker(path, "a" * 16, tmp_path / "pass" / f"{'a' * 16}.json")
    assert record["status"] == "stable" and (tmp_path / "pass" / f"{'a' * 16}.json").exists()
    with pytest.raises(KappaflowError, match="verdict is for gate a{16}, but .* make gate b{16}"):
        stability.write_pass_marker(path, "b" * 16, tmp_path / "pass" / "b.json")
    path.write_text(json.dumps(dict(verdict, status="unstable", passed=False)))
    with pytest.raises(stability.UnstableStructureError, match="status unstable"):
        stability.write_pass_marker(path, "a" * 16, tmp_path / "pass" / "c.json")
    assert not (tmp_path / "pass" / "b.json").exists() and not (tmp_path / "pass" / "c.json").exists()


SETTINGS = {"system": "si", "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
            "relax": {"enabled": False}, "sow": {"pair_cutoff_ang": 3.0},
            "bte": {"mesh": [5, 5, 5], "temperatures": [300]}}


@pytest.mark.slow
def test_enabling_the_gate_later_reruns_no_pw_x_and_a_new_structure_waits_again(workspace):
    (workspace / "off.yaml").write_text(yaml.safe_dump(dict(SETTINGS, stability={"enabled": False})))
    (workspace / "on.yaml").write_text(yaml.safe_dump(SETTINGS))
    run_snakemake(workspace, "--configfile", "off.yaml")
    R = workspace / "results/si"
    assert not (R / "stability/stability.json").exists()
    log = workspace / "mock_on.log"
    run_snakemake(workspace, "--configfile", "on.yaml", env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert mock_invocations(log) == [], "enabling the gate must not rerun finished pw.x jobs"
    verdict = json.loads((R / "stability/stability.json").read_text())
    assert verdict["passed"] and (R / f"stability/pass/{verdict['source']['gate_id']}.json").exists()
    # a new structure (other lattice constant): new keys everywhere, a new gate id; every pair job
    # starts only after the re-run gate has written its verdict
    unit = (workspace / "config/systems/si/Si.scf.in").read_text()
    changed = re.sub(r"celldm\(1\)\s*=\s*([0-9.]+)", lambda m: f"celldm(1) = {float(m[1]) * 1.002:.6f}", unit)
    assert changed != unit
    (workspace / "config/systems/si/Si.scf.in").write_text(changed)
    log2 = workspace / "mock_new.log"
    run_snakemake(workspace, "--configfile", "on.yaml", env={"KAPPAFLOW_MOCK_PW_LOG": str(log2)})
    verdict2 = json.loads((R / "stability/stability.json").read_text())
    assert verdict2["source"]["gate_id"] != verdict["source"]["gate_id"]
    plan = stability.plan_from_files(R / "sow/manifest.json", R / "sow/phono3py_disp.yaml")
    calls = mock_invocations(log2)
    t_gate = (R / "stability/stability.json").stat().st_mtime
    pair_starts = [float(row[0]) for row in calls if row[1] in plan["gated_keys"]]
    assert len(pair_starts) == len(plan["gated_keys"]) > 0 and min(pair_starts) >= t_gate
