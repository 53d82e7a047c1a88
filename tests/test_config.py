"""Config: one schema, validated at start-up with one-line errors naming file and reason."""
import pytest

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
    with pytest.raises(InputFileError, match=r"Si.scf.in: pseudopotential for Si not found: /nowhere/Si.pz-vbc.UPF"):
        config.load("config/config.yaml", {"dft": {"pseudo_dir": "/nowhere"}})


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
