"""Config: one schema, validated at start-up with one-line errors naming file and reason."""
import re

import pytest
import yaml

from kappaflow import config
from kappaflow.errors import ConfigError, InputFileError

from conftest import REPO


@pytest.fixture
def cfgdir(tmp_path, monkeypatch):
    import shutil
    shutil.copytree(REPO / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_and_system_merge(cfgdir):
    c = config.load("config/config.yaml")
    assert c["name"] == "si" and c["sow"]["supercell"] == [2, 2, 2]
    assert c["sow"]["amplitude_ang"] == 0.01 and c["bte"]["backend"] == "phono3py"
    c = config.load("config/mock/ges2.yaml")
    assert c["sow"]["neighbour_shells"] == 3 and c["dft"]["pw_command"].startswith("kappaflow-mock-pw")


@pytest.mark.parametrize("override, message", [
    ({"sow": {"supercel": [2, 2, 2]}}, "sow: unknown key(s) ('supercel' was unexpected)"),
    ({"bte": {"mesh": [11, 11]}}, "bte.mesh: [11, 11] is too short"),
    ({"sow": {"amplitude_ang": "small"}}, "sow.amplitude_ang: 'small' is not of type 'number'"),
    ({"colour": "blue"}, "(top level): unknown key(s)"),
])
def test_unknown_keys_and_wrong_types(cfgdir, override, message):
    with pytest.raises(ConfigError) as exc:
        config.load("config/config.yaml", override)
    assert message in str(exc.value) and "config/systems/si.yaml" in str(exc.value)


def test_missing_pseudopotential(cfgdir):
    """`kappaflow validate` checks them; the workflow's start-up, dry runs and the plan do not (the jobs do)."""
    with pytest.raises(InputFileError, match=r"Si.scf.in: pseudopotential for Si not found: /nowhere/Si.pz-vbc.UPF"):
        config.load("config/config.yaml", {"dft": {"pseudo_dir": "/nowhere"}}, check_pseudopotentials=True)
    assert config.load("config/config.yaml", {"dft": {"pseudo_dir": "/nowhere"}})["dft"]["pseudo_dir"] == "/nowhere"


def test_pwx_job_checks_pseudopotentials_where_pwx_reads_them(tmp_path, monkeypatch):
    """pw.x reads pseudo_dir relative to its run directory (work/ beside the input), else $ESPRESSO_PSEUDO."""
    from kappaflow.dft import check_pseudopotentials

    text = (REPO / "config/systems/si/Si.scf.in").read_text()
    pw_in = tmp_path / "key" / "pw.in"
    pw_in.parent.mkdir()
    (tmp_path / "key" / "pp").mkdir()
    pw_in.write_text(re.sub(r"pseudo_dir\s*=\s*'[^']*'", "pseudo_dir = '../pp'", text))
    with pytest.raises(InputFileError, match=r"pw.in: pseudopotential for Si not found: .*/key/pp/Si.pz-vbc.UPF"):
        check_pseudopotentials(pw_in, "pw.x")
    check_pseudopotentials(pw_in, "kappaflow-mock-pw --model stillinger-weber-si")  # the mock reads none
    check_pseudopotentials(pw_in, "pw.x", mode=False)
    (tmp_path / "key" / "pp" / "Si.pz-vbc.UPF").write_text("")
    check_pseudopotentials(pw_in, "srun pw.x")
    pw_in.write_text(re.sub(r"pseudo_dir\s*=\s*'[^']*',?", "", text))
    monkeypatch.setenv("ESPRESSO_PSEUDO", str(tmp_path / "key" / "pp"))
    check_pseudopotentials(pw_in, "pw.x")
    monkeypatch.setenv("ESPRESSO_PSEUDO", str(tmp_path))
    with pytest.raises(InputFileError, match="pw.x not started"):
        check_pseudopotentials(pw_in, "pw.x")


def _user_config(*files):
    """What Snakemake hands the Snakefile for `--configfile <files>`: config/config.yaml, then the files."""
    user = {}
    for path in ("config/config.yaml", *files):
        user = config.deep_merge(user, yaml.safe_load(open(path)) or {})
    return user


@pytest.mark.parametrize("system", ["ges2", "si"])
def test_system_file_given_as_configfile_is_the_system(cfgdir, system):
    """`snakemake --configfile config/systems/ges2.yaml`: that file's own system wins over config.yaml's
    `system: si`, and its paths stay relative to it."""
    c = config.resolve(_user_config(f"config/systems/{system}.yaml"))
    own = yaml.safe_load(open(f"config/systems/{system}.yaml"))
    assert c["name"] == system
    assert c["unitcell"] == f"config/systems/{own['unitcell']}"
    assert c["supercell_template"] == f"config/systems/{own['supercell_template']}"
    assert c["sow"] == config.resolve({"system": system})["sow"]
    assert c["dft"]["pw_command"] == "pw.x"  # config/config.yaml still applies
    # with the mock on top (a later --configfile) and with the same system named explicitly
    (cfgdir / "mock.yaml").write_text("dft: {pw_command: kappaflow-mock-pw --model ges2-morse}\n")
    c = config.resolve(config.deep_merge(_user_config(f"config/systems/{system}.yaml", "mock.yaml"),
                                         {"system": system}))
    assert c["name"] == system and c["dft"]["pw_command"].startswith("kappaflow-mock-pw")


def test_system_file_outside_systems_dir_as_configfile_says_what_to_do(cfgdir):
    import shutil

    shutil.copytree("config/systems/ges2", "elsewhere/mine")
    text = open("config/systems/ges2.yaml").read().replace("ges2/", "mine/")
    open("elsewhere/mine.yaml", "w").write(text)
    with pytest.raises(ConfigError, match=r"unitcell 'mine/GeS2.scf.in' does not exist .*--config system="):
        config.resolve(_user_config("elsewhere/mine.yaml"))
    c = config.resolve(config.deep_merge(_user_config(), {"system": "elsewhere/mine.yaml"}))
    assert c["name"] == "mine" and c["unitcell"] == "elsewhere/mine/GeS2.scf.in"


def test_mock_skips_pseudopotential_check(cfgdir):
    c = config.load("config/mock/ges2.yaml")  # Debian ships no S pseudopotential; the mock needs none
    assert c["name"] == "ges2"


def test_template_without_placeholders(cfgdir):
    path = cfgdir / "config/systems/si/Si.sc.in"
    path.write_text(path.read_text().replace("##CELL##", ""))
    with pytest.raises(InputFileError, match=r"Si.sc.in: supercell template lacks the placeholder\(s\) ##CELL##"):
        config.load("config/config.yaml")


def test_both_cutoff_kinds_refused(cfgdir):
    with pytest.raises(ConfigError, match="pair_cutoff_ang or neighbour_shells, not both"):
        config.load("config/config.yaml", {"sow": {"neighbour_shells": 2}})


def test_figure_titles_mark_mock_forces():
    real = {"name": "si", "description": "Si, LDA", "dft": {"pw_command": "mpirun -np 2 pw.x"}}
    mock = {"name": "si", "description": "Si, LDA", "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"}}
    assert config.figure_title(real) == "Si, LDA"
    assert config.figure_title(mock) == "Si, LDA [mock pw.x: stillinger-weber-si]"
    assert config.figure_title({"name": "ges2", "dft": {"pw_command": "pw.x"}}) == "ges2"


def test_gk_cell_size_study_settings(cfgdir):
    """gk.cell_sizes: the cells of the study, the main run's gk.supercell among them, smallest first; a
    repeated cell or a cell that is not three integers is refused."""
    from kappaflow.gk.steps import md_params, resolve_settings, size_cells

    gk = config.load("config/config.yaml", {"gk": {"cell_sizes": [[5, 5, 5], [4, 4, 4]]}})["gk"]
    cfg = resolve_settings(gk)  # light preset: gk.supercell 3x3x3
    assert size_cells(cfg) == ["3x3x3", "4x4x4", "5x5x5"]
    assert md_params(cfg, supercell="4x4x4")["supercell"] == [4, 4, 4] and md_params(cfg)["supercell"] == [3, 3, 3]
    assert "cell_sizes" not in md_params(cfg)  # a changed study reruns no MD of the main run
    assert size_cells(resolve_settings(config.load("config/config.yaml")["gk"])) == []
    with pytest.raises(ConfigError, match=r"gk.cell_sizes: 4x4x4 given more than once"):
        resolve_settings({**gk, "cell_sizes": [[4, 4, 4], [4, 4, 4]]})
    with pytest.raises(ConfigError, match="cell_sizes"):
        config.load("config/config.yaml", {"gk": {"cell_sizes": [[4, 4]]}})
    with pytest.raises(ConfigError, match="three positive integers"):
        md_params(cfg, supercell="4x4")


def test_config_readme_maps_every_schema_block():
    """config/README.md's table names every top-level key of the schema (a new block without a line fails)."""
    schema = yaml.safe_load((REPO / "src/kappaflow/schema/config.schema.yaml").read_text())
    text = (REPO / "config/README.md").read_text()
    missing = [key for key in schema["properties"] if f"`{key}`" not in text]
    assert not missing, missing
    for shipped in (REPO / "config/mock").glob("*.yaml"):
        assert f"mock/{shipped.name}" in text or f"`mock/{shipped.stem}" in text, shipped.name
