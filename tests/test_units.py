"""Unit conversions against an independent route: ASE's CODATA 2018 unit set and QE's printed values."""
import numpy as np
from ase.units import create_units

from kappaflow import units

CODATA2018 = create_units("2018")


def test_force_conversion_matches_codata_2018():
    expected = CODATA2018["Rydberg"] / CODATA2018["Bohr"]
    assert np.isclose(units.RY_PER_BOHR_TO_EV_PER_ANG, expected, rtol=1e-12)
    assert np.isclose(units.EV_PER_ANG_TO_RY_PER_BOHR * expected, 1.0, rtol=1e-14)
    assert 0.038893 < units.EV_PER_ANG_TO_RY_PER_BOHR < 0.038894


def test_lengths_and_energies():
    assert np.isclose(units.BOHR_ANG, CODATA2018["Bohr"], rtol=1e-12)
    assert np.isclose(units.RY_EV, CODATA2018["Rydberg"], rtol=1e-12)
    assert units.ang_to_nm(10.0) == 1.0


def test_stress_conversion_matches_pwx_output():
    # pw.x 6.7 prints each stress row in Ry/bohr^3 and in kbar; the fixture gives an independent check
    line = "  -0.00000734  -0.00000017  -0.00000017           -1.08       -0.02       -0.02"
    ry, kbar = float(line.split()[0]), float(line.split()[3])
    converted = units.ev_per_ang3_to_kbar(units.ry_per_bohr3_to_ev_per_ang3(ry))
    assert abs(converted - kbar) < 0.006


def test_ry_time_unit():
    # the Rydberg atomic unit of time is 4.8378e-17 s
    assert np.isclose(units.RY_TIME_FS, 0.048377686, rtol=1e-7)
