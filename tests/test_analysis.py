"""Where the heat is carried (kappaflow.modes, kappaflow.analysis): `snakemake analysis` as a user types it on
the shipped mock Si config, with a reference overlay.

Expected numbers from outside the code under test: the κ table (read by bte.read_kappa_csv) for the end of
the cumulative curves, and the RTA formula κ_λ = C_λ |v_λ|² τ_λ / (3 N V) on the raw datasets of
phono3py's file (read here with h5py) and the primitive volume from phono3py_disp.yaml, for the
lifetime and group-velocity units of the mode table."""
import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import copy_workflow, run_snakemake
from kappaflow import modes
from kappaflow.analysis import read_references
from kappaflow.bte import read_kappa_csv
from kappaflow.errors import ConfigError, InputFileError, KappaflowError

pytestmark = pytest.mark.slow

CONFIG = "config/mock/si.yaml"  # as shipped; the test adds a reference overlay (analysis.reference_kappa)
ELECTRONVOLT_J = 1.602176634e-19  # independent of kappaflow.units on purpose


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("analysis"))
    (work / "glassbrenner.csv").write_text("temperature_k,kappa_w_per_mk\n100,884\n300,156\n600,61.9\n")
    extra = {"analysis": {"temperatures_k": [300, 600], "reference_kappa": [
        {"label": "Glassbrenner & Slack 1964 (natural Si)", "csv": "glassbrenner.csv"},
        {"label": "inline", "temperatures_k": [200, 400], "kappa_w_per_mk": [260, 105]}]}}
    (work / "overlay.yaml").write_text(yaml.safe_dump(extra))
    # the default target: the analysis is part of it with the phono3py backend
    run_snakemake(work, "--configfile", CONFIG, "overlay.yaml")
    return work


def test_cumulative_kappa_ends_at_the_kappa_table(run):
    r = run / "results/si"
    table = read_kappa_csv(r / "bte/kappa.csv")
    cumulative = pd.read_csv(r / "analysis/cumulative_kappa.csv")
    for T in (300.0, 600.0):
        i = int(np.flatnonzero(table.temperatures_k == T)[0])
        expected = np.trace(table.kappa_w_per_mk[i]) / 3
        for axis in ("frequency_thz", "mean_free_path_nm"):
            part = cumulative[(cumulative.temperature_k == T) & (cumulative.axis == axis)]
            assert np.all(np.diff(part["value"]) >= 0), axis  # sorted along the axis
            assert part["cumulative_kappa_w_per_mk"].iloc[-1] == pytest.approx(expected, rel=1e-9), (T, axis)
    branches = pd.read_csv(r / "analysis/branches.csv")
    at300 = branches[branches.temperature_k == 300.0]
    assert list(at300["branch"][:3]) == ["TA (lowest)", "TA", "LA"] and len(at300) == 6  # 2 atoms: 6 bands
    assert at300["kappa_w_per_mk"].sum() == pytest.approx(np.trace(table.kappa_w_per_mk[
        int(np.flatnonzero(table.temperatures_k == 300.0)[0])]) / 3, rel=1e-9)
    assert at300["share"].sum() == pytest.approx(1.0, abs=1e-9)  # the table: 10 significant digits
    for name in ("cumulative_kappa.png", "lifetimes.png", "branches.png", "kappa_loglog.png"):
        assert (r / "analysis" / name).stat().st_size > 20_000, name


def test_lifetimes_and_velocities_give_phono3pys_mode_kappa_by_the_rta_formula(run):
    r = run / "results/si"
    mode_file = next((r / "bte").glob("kappa-m*.hdf5"))
    table = pd.read_csv(r / "analysis/modes.csv")
    disp = yaml.safe_load((r / "sow/phono3py_disp.yaml").read_text())
    lattice = np.array(disp["primitive_cell"]["lattice"], dtype=float) * 1e-10  # m
    volume = abs(np.linalg.det(lattice))
    with h5py.File(mode_file) as fh:
        cv_ev_per_k = fh["heat_capacity"][()]
        n_grid = fh["weight"][()].sum()
        temps = fh["temperature"][()]
    it = int(np.flatnonzero(temps == 300.0)[0])
    part = table[table.temperature_k == 300.0].sort_values(["q_index", "band"])
    cv = cv_ev_per_k[it].ravel() * ELECTRONVOLT_J
    tau_s = part["lifetime_ps"].to_numpy() * 1e-12
    v = part["group_velocity_m_per_s"].to_numpy()
    finite = np.isfinite(tau_s)
    rta = np.zeros(len(part))
    rta[finite] = part["weight"].to_numpy()[finite] * cv[finite] * v[finite] ** 2 * tau_s[finite] / (3 * n_grid * volume)
    kappa = part["kappa_w_per_mk"].to_numpy()
    big = kappa > 1e-6 * kappa.max()
    np.testing.assert_allclose(rta[big], kappa[big], rtol=1e-6)
    assert np.all(kappa[~finite] == 0)  # no scattering, no κ (acoustic at Γ)
    # mean free path = |v| τ in nm
    np.testing.assert_allclose(part["mean_free_path_nm"][finite], v[finite] * tau_s[finite] * 1e9, rtol=1e-8)


def test_reference_overlay_and_bad_input_name_the_file_and_the_problem(run, tmp_path):
    refs = read_references([{"label": "a", "csv": str(run / "glassbrenner.csv")},
                            {"label": "b", "temperatures_k": [1, 2], "kappa_w_per_mk": [3, 4]}])
    assert list(refs[0]["kappa_w_per_mk"]) == [884, 156, 61.9] and list(refs[1]["temperatures_k"]) == [1, 2]
    bad = tmp_path / "bad.csv"
    bad.write_text("temperature_k,kappa_w_per_mk\n100,884\n300,abc\n")
    with pytest.raises(InputFileError, match=r"bad.csv:3: .*not a positive number"):
        read_references([{"label": "x", "csv": str(bad)}])
    (tmp_path / "cols.csv").write_text("T,kappa\n100,1\n")
    with pytest.raises(InputFileError, match=r"cols.csv.*no column kappa_w_per_mk, temperature_k"):
        read_references([{"label": "x", "csv": str(tmp_path / "cols.csv")}])
    with pytest.raises(ConfigError, match=r"reference_kappa\[0\] \(x\): 2 temperatures_k but 1 kappa_w_per_mk"):
        read_references([{"label": "x", "temperatures_k": [1, 2], "kappa_w_per_mk": [3]}])
    not_hdf5 = tmp_path / "kappa-m111.hdf5"
    not_hdf5.write_text("no")
    with pytest.raises(InputFileError, match="kappa-m111.hdf5.*not an HDF5 file"):
        modes.read_mode_file(not_hdf5)
    m = modes.read_mode_file(next((run / "results/si/bte").glob("kappa-m*.hdf5")))
    with pytest.raises(KappaflowError, match=r"no BTE at 333 K.*bte.temperatures"):
        modes.select_temperature(m, 333)


def test_results_load_gives_the_tables_as_dataframes(run, tmp_path):
    """kappaflow.results.load: the κ of the run tidy (checked against bte.read_kappa_csv), the other tables
    as written, the provenance; a folder that is not one stops with the reason."""
    from kappaflow import results
    from kappaflow.errors import KappaflowError

    r = results.load(run / "results/si")
    table = read_kappa_csv(run / "results/si/bte/kappa.csv")
    dft = r.kappa[r.kappa.route == "dft"]
    np.testing.assert_array_equal(dft["temperature_k"], table.temperatures_k)
    np.testing.assert_array_equal(dft["kappa_zz_w_per_mk"], table.kappa_w_per_mk[:, 2, 2])
    np.testing.assert_allclose(dft["kappa_trace3_w_per_mk"], np.trace(table.kappa_w_per_mk, axis1=1, axis2=2) / 3,
                               rtol=1e-15)
    assert {"cost", "modes", "cumulative_kappa", "branches"} <= set(r.names())
    assert r.cost["wall_time_s"].dtype == np.float64 and len(r.cost) == len(pd.read_csv(run / "results/si/dft/cost.csv"))
    assert r.provenance["bte/kappa.csv"]["route"] == "dft"
    with pytest.raises(AttributeError, match="no table 'gk'"):
        r.gk
    with pytest.raises(KappaflowError, match="no such results folder"):
        results.load(tmp_path / "nowhere")
    with pytest.raises(KappaflowError, match="no κ table"):
        results.load(tmp_path)


def test_an_lbte_run_is_analysed_with_phono3pys_rta_split_and_says_so(run, tmp_path):
    """phono3py's LBTE file has no mode split of the LBTE κ, only of the RTA κ it computes alongside
    (mode_kappa_RTA): the analysis uses that split, checks the table against the LBTE κ, and says so."""
    import h5py

    from kappaflow import analysis, config, steps

    r = run / "results/si"
    cfg = config.load(run / CONFIG)
    bte_cfg = dict(cfg["bte"], method="lbte", mesh=[7, 7, 7], temperatures=[300.0, 600.0])
    modes_file = tmp_path / "kappa-m777.hdf5"
    steps.run_bte(r / "sow/phono3py_disp.yaml", r / "fc/fc2.hdf5", r / "fc/fc3.hdf5", bte_cfg, tmp_path / "kappa.csv",
                  modes_path=modes_file)
    outputs = {k: tmp_path / f"{k}.{'csv' if k in ('modes', 'cumulative_table', 'branches_table') else 'png'}"
               for k in ("modes", "cumulative_table", "branches_table", "cumulative", "lifetimes", "branches",
                         "kappa_loglog")}
    ends = analysis.run_analysis(modes_file, tmp_path / "kappa.csv", {"temperatures_k": [300.0]}, outputs, "Si LBTE")
    with h5py.File(modes_file) as fh:
        assert "mode_kappa" not in fh
        rta = fh["kappa_RTA"][()][0, :3].mean()
        lbte = fh["kappa"][()][0, :3].mean()
    assert ends[300.0] == pytest.approx(rta, rel=1e-9)
    lbte_table = read_kappa_csv(tmp_path / "kappa.csv")
    assert np.trace(lbte_table.kappa_w_per_mk[0]) / 3 == pytest.approx(lbte, rel=1e-9)
    assert abs(lbte / rta - 1) > 1e-3  # the two differ: the split is not of the table's κ


def test_an_analysis_temperature_outside_the_bte_stops_with_the_reason(run):
    # last in the file: the failed job removes the analysis outputs the tests above read
    extra = {"analysis": {"temperatures_k": [333]}}
    (run / "t333.yaml").write_text(yaml.safe_dump(extra))
    proc = run_snakemake(run, "analysis", "--configfile", CONFIG, "t333.yaml", check=False)
    assert proc.returncode != 0
    log = (run / "results/si/logs/analysis.log").read_text()
    assert "no BTE at 333 K" in log and "bte.temperatures" in log, log
