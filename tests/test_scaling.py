"""pw.x scaling study: the run plan, and `snakemake scaling` with the real pw.x on 1 and 2 MPI ranks."""
import re
import shutil

import pytest
import yaml

from conftest import run_snakemake
from kappaflow import scaling
from kappaflow.errors import ConfigError


def test_plan_follows_the_config_and_names_each_run():
    cfg = {"strong_ranks": [1, 2, 4, 8], "strong_supercell": None,
           "weak": [{"supercell": [1, 1, 1], "ranks": 1}, {"supercell": [2, 2, 1], "ranks": 4},
                    {"supercell": [3, 3, 1], "ranks": 8}]}
    runs = scaling.planned_runs(cfg, [3, 3, 1])
    assert [r["name"] for r in runs] == ["strong_3x3x1_r1", "strong_3x3x1_r2", "strong_3x3x1_r4",
                                         "strong_3x3x1_r8", "weak_1x1x1_r1", "weak_2x2x1_r4", "weak_3x3x1_r8"]
    with pytest.raises(ConfigError, match="duplicated"):
        scaling.planned_runs({**cfg, "strong_ranks": [2, 2]}, [3, 3, 1])
    with pytest.raises(ConfigError, match="three integers"):
        scaling.planned_runs(cfg, [[2, 0, 0], [0, 2, 0], [0, 0, 1]])


def test_launch_command_per_rank_count():
    cfg = {"pw_command": "env OMP_NUM_THREADS=8 srun --ntasks={ranks} --cpus-per-task=8 pw.x",
           "pw_command_serial": "pw.x"}
    assert scaling.pw_command_for(cfg, 4) == "env OMP_NUM_THREADS=8 srun --ntasks=4 --cpus-per-task=8 pw.x"
    assert scaling.pw_command_for(cfg, 1) == "pw.x"  # no srun inside the job step's own srun
    with pytest.raises(ConfigError, match="ranks"):
        scaling.pw_command_for({**cfg, "pw_command": "srun pw.x"}, 2)


@pytest.mark.slow
@pytest.mark.pwx
@pytest.mark.skipif(shutil.which("pw.x") is None or shutil.which("mpirun") is None,
                    reason="needs pw.x and mpirun (apt quantum-espresso)")
def test_scaling_target_with_real_pwx_on_one_and_two_ranks(workspace):
    """The smoke test of the study on this 2-core machine: strong scaling of a displaced Si 2x1x1 supercell
    and the weak series unit cell (1 rank) / 2x1x1 (2 ranks), figures from pw.x's own WALL times."""
    settings = {"system": "si", "relax": {"enabled": False},
                "scaling": {"strong_supercell": [2, 1, 1], "strong_ranks": [1, 2],
                            "weak": [{"supercell": [1, 1, 1], "ranks": 1}, {"supercell": [2, 1, 1], "ranks": 2}]}}
    (workspace / "scaling.yaml").write_text(yaml.safe_dump(settings))
    run_snakemake(workspace, "scaling", "--configfile", "scaling.yaml",
                  env={"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                       "OMPI_MCA_rmaps_base_oversubscribe": "1"}, timeout=1800)
    out = workspace / "results/si/scaling"
    for png in ("strong_scaling.png", "weak_scaling.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["run"]: r for r in __import__("csv").DictReader(open(out / "scaling.csv"))}
    assert set(rows) == {"strong_2x1x1_r1", "strong_2x1x1_r2", "weak_1x1x1_r1", "weak_2x1x1_r2"}
    wall = {}
    for name in rows:
        text = (out / name / "pw.out").read_text()
        # pw.x's own numbers, read here with a plain regex (independent of kappaflow's parser)
        wall[name] = float(re.search(r"PWSCF\s*:.*CPU\s+([\d.]+)s WALL", text).group(1))
        n_proc = int(re.search(r"running on\s+(\d+) processors", text).group(1))
        assert n_proc == int(rows[name]["ranks"])
        assert float(rows[name]["wall_time_s"]) == pytest.approx(wall[name], abs=1e-3)
    assert float(rows["strong_2x1x1_r2"]["speedup"]) == pytest.approx(
        wall["strong_2x1x1_r1"] / wall["strong_2x1x1_r2"], rel=1e-3)
    assert float(rows["strong_2x1x1_r2"]["efficiency"]) == pytest.approx(
        wall["strong_2x1x1_r1"] / wall["strong_2x1x1_r2"] / 2, rel=1e-3)
    assert float(rows["weak_2x1x1_r2"]["efficiency"]) == pytest.approx(
        wall["weak_1x1x1_r1"] / wall["weak_2x1x1_r2"], rel=1e-3)
    # constant k-point density: the unit cell's 4x4x4 becomes 2x4x4 in the 2x1x1 cell
    assert rows["weak_1x1x1_r1"]["k_mesh"] == "4x4x4" and rows["weak_2x1x1_r2"]["k_mesh"] == "2x4x4"
    assert rows["strong_2x1x1_r1"]["n_atoms"] == "4"
    # the strong-scaling supercell is displaced like an FC3 supercell (first atom by the sow amplitude)
    pw_in = (out / "strong_2x1x1_r1" / "pw.in").read_text()
    assert "ATOMIC_POSITIONS" in pw_in
