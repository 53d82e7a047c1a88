"""Plan before you pay: counts equal what Snakemake schedules, cost model, memory estimate vs measured RSS."""
import csv
import json
import math
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow import config, plan
from kappaflow.errors import ConfigError, InputFileError
from kappaflow.qe.pwin import read_pw_input

from conftest import REPO, run_snakemake

BOHR_ANG = 0.529177210903  # CODATA 2018


@pytest.fixture
def cfgdir(tmp_path, monkeypatch):
    import shutil

    shutil.copytree(REPO / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cutoff_notation_negative_numbers_are_shells():
    assert plan.split_cutoff(-3) == (None, 3)
    assert plan.split_cutoff(4.5) == (4.5, None)
    assert plan.split_cutoff(None) == (None, None)
    with pytest.raises(ConfigError, match="must be an integer"):
        plan.split_cutoff(-2.5)
    with pytest.raises(ConfigError, match="cutoff 0"):
        plan.split_cutoff(0)
    assert plan.cutoff_label(-4) == "4 shells" and plan.supercell_label([3, 3, 1]) == "3x3x1"
    assert plan.parse_supercell_arg("3x3x1") == [3, 3, 1]


def test_half_shortest_image_distance_of_si_and_ges2():
    si = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    a = 10.26 * BOHR_ANG  # celldm(1); fcc primitive vectors are a/√2 long
    assert plan.max_safe_cutoff_ang(si, [2, 2, 2]) == pytest.approx(0.5 * 2 * a / math.sqrt(2), rel=1e-12)
    assert plan.max_safe_cutoff_ang(si, [3, 3, 3]) == pytest.approx(0.5 * 3 * a / math.sqrt(2), rel=1e-12)
    ges2 = read_pw_input(REPO / "config/systems/ges2/GeS2.scf.in").atoms
    a_ges2 = 6.67592990 * 0.991634235 * BOHR_ANG  # tetragonal a; 3x3x1: c (34.7 Å) is not the shortest
    assert plan.max_safe_cutoff_ang(ges2, [3, 3, 1]) == pytest.approx(1.5 * a_ges2, rel=1e-9)


def test_k_points_of_the_templates():
    si = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    assert plan.k_points_of_template(REPO / "config/systems/si/Si.sc.in", si) == 8  # K_POINTS 2 2 2
    ges2 = read_pw_input(REPO / "config/systems/ges2/GeS2.scf.in").atoms
    assert plan.k_points_of_template(REPO / "config/systems/ges2/GeS2.sc.scf.in", ges2) == 9  # 3 3 1


def test_cost_model_measured_scaled_reference(tmp_path):
    table = tmp_path / "cost.csv"
    table.write_text("key,role,index,n_atoms,wall_time_s\na,base,0,16,10.0\nb,fc3,0,16,12.0\nc,fc3,1,16,50.0\n")
    model = plan.CostModel.from_cost_table(table)
    assert model.wall_time_s(16, 8) == (12.0, "measured")  # median of 10, 12, 50
    t, how = model.wall_time_s(54, 8)
    assert t == pytest.approx(12.0 * (54 / 16) ** 3) and how == "scaled N^3 from N=16"
    none = plan.CostModel.from_cost_table(tmp_path / "missing.csv", {"n_atoms": 8, "k_points": 4, "wall_time_s": 2.0})
    assert none.wall_time_s(16, 8)[0] == pytest.approx(2.0 * 2**3 * 2)
    assert math.isnan(plan.CostModel.from_cost_table(tmp_path / "missing.csv").wall_time_s(16, 8)[0])
    bad = tmp_path / "bad.csv"
    bad.write_text("key,n_atoms\na,16\n")
    with pytest.raises(InputFileError, match=r"bad.csv:1: the cost table \(rule cost's\) lacks column\(s\) wall_time_s"):
        plan.CostModel.from_cost_table(bad)


def test_memory_formulas_count_float64_arrays():
    # fc3 of a 54-atom supercell: 54^3 * 27 * 8 bytes; compact (6-atom primitive): 6 * 54^2 * 27 * 8
    assert plan.fc3_full_bytes(54) == 54**3 * 216
    assert plan.fc3_compact_bytes(6, 54) == 6 * 54**2 * 216
    rta = plan.bte_memory_mb(6, 54, [11, 11, 4], "rta")
    lbte = plan.bte_memory_mb(6, 54, [11, 11, 4], "lbte", n_temperatures=2, n_irreducible_q=50)
    # the LBTE collision matrix: 2 temperatures x (50 * 18 * 3)^2 float64, plus one work copy
    assert lbte - rta == pytest.approx(2 * 2 * (50 * 18 * 3) ** 2 * 8 / 2**20)


def test_mem_mb_estimate_for_snakemake_resources(cfgdir):
    cfg = config.load("config/mock/ges2.yaml")
    reap_mb = plan.mem_mb_estimate(cfg, "reap")
    bte_mb = plan.mem_mb_estimate(cfg, "bte")
    assert reap_mb % 100 == 0 and bte_mb % 100 == 0
    n_cells = plan._systematic_cells_upper_bound(6, 54)
    assert reap_mb >= plan.MEM_SAFETY_FACTOR * plan.reap_memory_mb(54, n_cells) > reap_mb - 100
    assert bte_mb >= plan.MEM_SAFETY_FACTOR * plan.bte_memory_mb(6, 54, [11, 11, 4]) > bte_mb - 100
    with pytest.raises(ConfigError, match="stage must be reap, bte or sweep_kappa"):
        plan.mem_mb_estimate(cfg, "relax")


# --- estimate vs measured peak RSS -----------------------------------------------------------------
MEASURE = textwrap.dedent("""
    import json, sys
    import numpy as np
    stage, work = sys.argv[1], sys.argv[2]
    from kappaflow.steps import load_phono3py
    ph3 = load_phono3py(f"{work}/disp.yaml")
    if stage == "reap":
        ph3.forces = np.load(f"{work}/forces.npy")
        ph3.produce_fc3(is_compact_fc=False)
        ph3.symmetrize_fc3()
        ph3.symmetrize_fc2()
    else:
        from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5
        from kappaflow import bte
        ph3.fc3 = read_fc3_from_hdf5(filename=f"{work}/fc3.hdf5")
        ph3.fc2 = read_fc2_from_hdf5(filename=f"{work}/fc2.hdf5")
        bte.run_phono3py(ph3, json.loads(sys.argv[3]), [300.0], stage)
    # VmHWM: this process's own peak (ru_maxrss would keep the forking parent's size across exec)
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    print(float(hwm.split()[1]) / 1024.0)
""")


def test_random_candidates_count_parameters_at_the_sows_cutoff(cfgdir):
    """A random set is fitted within the sow's FC3 cutoff; the plan counts its parameters there and the
    independent equations (3N - 3 per supercell), and says when the sow will refuse the set."""
    cfg = config.load("config/mock/si.yaml")
    rows = plan.plan_candidates(cfg, [plan.Candidate([2, 2, 2], None, "random", 1),
                                      plan.Candidate([2, 2, 2], 4.0, "random", 1)])
    loose, within = rows["rows"]
    assert (loose["label"], within["label"]) == ("2x2x2 random1", "2x2x2 random1 4 Å")
    assert (loose["fc2_free_parameters"], loose["fc3_free_parameters"]) == (8, 49)
    assert (within["fc2_free_parameters"], within["fc3_free_parameters"]) == (8, 17)
    assert loose["force_equations"] == within["force_equations"] == 45  # 16 atoms: 3 x 16 - 3
    assert within["pair_cutoff_ang"] == 4.0
    notes = plan.format_table(rows)
    assert "WARNING 2x2x2 random1: 45 force equations for 57 parameters: underdetermined, the sow will " \
           "refuse it" in notes
    assert "WARNING 2x2x2 random1 4 Å: 45 force equations" not in notes
    # the config's own candidates: the random set at the system's 4 Å
    assert [c.label for c in plan.candidates_from_config(cfg, strategies=["random"])] == ["2x2x2 random20 4 Å"]


@pytest.mark.slow
def test_memory_estimate_bounds_measured_peak_rss(tmp_path):
    """GeS2 (Morse mock) 3x3x1, 2 shells: reap and bte run as separate processes like the rules; the
    estimate must not be below the measured peak RSS, nor more than 2.5x above it."""
    from phono3py import Phono3py
    from phono3py.file_IO import write_fc2_to_hdf5, write_fc3_to_hdf5

    from kappaflow import sow
    from kappaflow.mock.potentials import ges2_mock_calculator, ges2_reference
    from kappaflow.structure import from_phonopy, to_phonopy

    unit = ges2_reference()
    cutoff = sow.shell_cutoff_ang(unit, [3, 3, 1], 2)
    ph3 = Phono3py(to_phonopy(unit), supercell_matrix=np.diag([3, 3, 1]), primitive_matrix=np.eye(3))
    ph3.generate_displacements(distance=0.01, cutoff_pair_distance=cutoff, is_plusminus="auto")
    ph3.save(str(tmp_path / "disp.yaml"))
    calc = ges2_mock_calculator()

    def forces(cell):
        atoms = from_phonopy(cell)
        atoms.calc = calc
        return atoms.get_forces()

    base = forces(ph3.supercell)
    cells = ph3.supercells_with_displacements
    f = np.array([forces(c) - base if c is not None else np.zeros_like(base) for c in cells])
    np.save(tmp_path / "forces.npy", f)
    ph3.forces = f
    ph3.produce_fc3(is_compact_fc=False)
    write_fc3_to_hdf5(ph3.fc3, filename=str(tmp_path / "fc3.hdf5"))
    write_fc2_to_hdf5(ph3.fc2, filename=str(tmp_path / "fc2.hdf5"))
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)

    def measured(*args):
        out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    n = len(ph3.supercell)
    checks = {
        "reap": (measured("reap", str(tmp_path)), plan.reap_memory_mb(n, len(cells))),
        "rta": (measured("rta", str(tmp_path), "[8, 8, 3]"), plan.bte_memory_mb(6, n, [8, 8, 3], "rta")),
        "lbte": (measured("lbte", str(tmp_path), "[6, 6, 2]"),
                 plan.bte_memory_mb(6, n, [6, 6, 2], "lbte", 1, plan.n_irreducible_q(unit, [6, 6, 2]))),
    }
    print("peak RSS MB measured vs estimated:", checks)
    for stage, (rss, estimate) in checks.items():
        assert rss <= estimate <= 2.5 * rss, (stage, rss, estimate)


# --- counts equal what Snakemake schedules ---------------------------------------------------------
SI = {"system": "si", "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
      "relax": {"enabled": False}, "sow": {"pair_cutoff_ang": 4.0},
      "bte": {"mesh": [5, 5, 5], "temperatures": [300]}}


def dft_jobs_scheduled(proc) -> int:
    m = re.search(r"^dft\s+(\d+)\s*$", proc.stdout + proc.stderr, re.M)
    return int(m.group(1)) if m else 0


@pytest.mark.slow
def test_si_plan_counts_equal_snakemake_schedule(workspace, monkeypatch):
    from kappaflow import cli

    (workspace / "si.yaml").write_text(yaml.safe_dump(SI))
    monkeypatch.chdir(workspace)
    assert cli.main(["plan", "si.yaml", "--cutoffs", "3", "4", "--strategies", "systematic", "random",
                     "--out-dir", "planned"]) == 0
    rows = {r["label"]: r for r in plan.read_plan_csv(workspace / "planned/plan.csv")}
    assert (workspace / "planned/plan.png").read_bytes()[:4] == b"\x89PNG"
    row = rows["2x2x2 4 Å"]
    assert int(row["n_displaced_fc3"]) == 39  # facts.md: Si 2x2x2 at 4.0 Å
    # 20 rattled + the undisplaced supercell; FC3 fitted within the sow's own 4 Å
    assert int(rows["2x2x2 random20 4 Å"]["n_pw_runs"]) == 21
    # the sow (checkpoint) runs, then Snakemake knows and schedules the dft jobs
    run_snakemake(workspace, "results/si/sow/manifest.json", "--configfile", "si.yaml")
    proc = run_snakemake(workspace, "-n", "--configfile", "si.yaml")
    manifest = json.loads((workspace / "results/si/sow/manifest.json").read_text())
    assert dft_jobs_scheduled(proc) == int(row["n_pw_runs_to_run"]) == int(row["n_pw_runs"])
    assert len({j["key"] for j in manifest["jobs"]}) == int(row["n_pw_runs"])
    # the snakemake target: same numbers, and the structure now read from the results
    (workspace / "si_plan.yaml").write_text(yaml.safe_dump(dict(SI, plan={"strategies": ["systematic"]})))
    run_snakemake(workspace, "plan", "--configfile", "si_plan.yaml")
    target = plan.read_plan_csv(workspace / "results/si/plan/plan.csv")
    assert [int(r["n_pw_runs"]) for r in target] == [int(row["n_pw_runs"])]


@pytest.mark.slow
def test_ges2_plan_shells_and_strategies_under_a_minute(cfgdir, capsys):
    from kappaflow import cli

    t0 = time.perf_counter()
    assert cli.main(["plan", "config/mock/ges2.yaml", "--cutoffs", "-2", "-3", "-4"]) == 0
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    rows = {r["label"]: r for r in plan.read_plan_csv(cfgdir / "results/ges2/plan/plan.csv")}
    assert set(rows) == {"3x3x1 2 shells", "3x3x1 3 shells", "3x3x1 4 shells", "3x3x1 random20 3 shells"}
    assert int(rows["3x3x1 3 shells"]["n_displaced_fc3"]) == 278  # facts.md: phono3py at 4.304 Å
    assert float(rows["3x3x1 3 shells"]["pair_cutoff_ang"]) == pytest.approx(4.304, abs=1e-3)
    assert all(int(r["n_atoms_supercell"]) == 54 for r in rows.values())
    runs = [int(rows[f"3x3x1 {n} shells"]["n_pw_runs"]) for n in (2, 3, 4)]
    params = [int(rows[f"3x3x1 {n} shells"]["fc3_free_parameters"]) for n in (2, 3, 4)]
    assert runs == sorted(runs) and params == sorted(params) and runs[0] < runs[2]
    assert "relative cost only" in out and "3x3x1 random20 3 shells" in out
    print(f"GeS2 plan: {seconds:.1f} s")
    assert seconds < 60
