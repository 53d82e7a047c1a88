"""The one place where units are converted.

kappaflow works internally in eV, Å, eV/Å, eV/Å², eV/Å³, K, THz and W/(m·K).  pw.x reads and writes
Rydberg atomic units (Ry, bohr, Ry/bohr, Ry/bohr³) and kbar; thirdorder and ShengBTE use nm.

The constants are CODATA 2018, exactly the values Quantum ESPRESSO 6.6+ compiles in
(``Modules/constants.f90``), so that a structure written in Å and read back by pw.x in bohr, or a force
printed by pw.x in Ry/bohr, converts without a systematic drift between the two codes.
"""

from __future__ import annotations

import numpy as np

# --- CODATA 2018 (as in QE's Modules/constants.f90) -------------------------------------------
HARTREE_SI = 4.3597447222071e-18  # J
ELECTRONVOLT_SI = 1.602176634e-19  # J
BOHR_RADIUS_SI = 0.529177210903e-10  # m
AMU_SI = 1.66053906660e-27  # kg
K_BOLTZMANN_SI = 1.380649e-23  # J/K
H_PLANCK_SI = 6.62607015e-34  # J s

#: 1 Hartree in eV (27.211386245988)
HARTREE_EV = HARTREE_SI / ELECTRONVOLT_SI
#: 1 Ry in eV (13.605693122994)
RY_EV = HARTREE_EV / 2.0
#: 1 bohr in Å (0.529177210903)
BOHR_ANG = BOHR_RADIUS_SI * 1e10
#: 1 nm in Å
NM_ANG = 10.0

# --- derived conversion factors -----------------------------------------------------------------
#: force: 1 Ry/bohr in eV/Å (25.71104309541616)
RY_PER_BOHR_TO_EV_PER_ANG = RY_EV / BOHR_ANG
#: force: 1 eV/Å in Ry/bohr (0.0388937935...)
EV_PER_ANG_TO_RY_PER_BOHR = 1.0 / RY_PER_BOHR_TO_EV_PER_ANG
#: pressure: 1 eV/Å³ in kbar (1602.176634)
EV_PER_ANG3_TO_KBAR = ELECTRONVOLT_SI / 1e-30 / 1e8
#: pressure: 1 Ry/bohr³ in eV/Å³
RY_PER_BOHR3_TO_EV_PER_ANG3 = RY_EV / BOHR_ANG**3
#: Boltzmann constant in eV/K
K_BOLTZMANN_EV = K_BOLTZMANN_SI / ELECTRONVOLT_SI
#: Rydberg atomic unit of time (hbar/Ry) in fs, used by pw.x for ``dt``
RY_TIME_FS = 2.0 * 1.0545718176461565e-34 / HARTREE_SI * 1e15


def ry_to_ev(energy_ry):
    return np.asarray(energy_ry, dtype=np.float64) * RY_EV


def ev_to_ry(energy_ev):
    return np.asarray(energy_ev, dtype=np.float64) / RY_EV


def bohr_to_ang(length_bohr):
    return np.asarray(length_bohr, dtype=np.float64) * BOHR_ANG


def ang_to_bohr(length_ang):
    return np.asarray(length_ang, dtype=np.float64) / BOHR_ANG


def ang_to_nm(length_ang):
    return np.asarray(length_ang, dtype=np.float64) / NM_ANG


def ry_per_bohr_to_ev_per_ang(force):
    return np.asarray(force, dtype=np.float64) * RY_PER_BOHR_TO_EV_PER_ANG


def ev_per_ang_to_ry_per_bohr(force):
    return np.asarray(force, dtype=np.float64) * EV_PER_ANG_TO_RY_PER_BOHR


def ry_per_bohr3_to_ev_per_ang3(stress):
    return np.asarray(stress, dtype=np.float64) * RY_PER_BOHR3_TO_EV_PER_ANG3


def ev_per_ang3_to_ry_per_bohr3(stress):
    return np.asarray(stress, dtype=np.float64) / RY_PER_BOHR3_TO_EV_PER_ANG3


def ev_per_ang3_to_kbar(stress):
    return np.asarray(stress, dtype=np.float64) * EV_PER_ANG3_TO_KBAR


def seconds_to_hours(seconds):
    return np.asarray(seconds, dtype=np.float64) / 3600.0


def ry_time_to_fs(dt_ry):
    return np.asarray(dt_ry, dtype=np.float64) * RY_TIME_FS


def fs_to_ry_time(dt_fs):
    return np.asarray(dt_fs, dtype=np.float64) / RY_TIME_FS


def fs_to_ase_time(t_fs):
    """fs to ASE's time unit (Å·sqrt(amu/eV)), for ASE dynamics."""
    from ase import units as ase_units

    return float(t_fs) * ase_units.fs


# --- molecular dynamics (Green–Kubo): velocities in Å/fs, masses in amu -----------------------
#: kinetic energy of 1 amu moving at 1 Å/fs, in eV (½ m v² with m in amu and v in Å/fs, times this)
AMU_ANG2_PER_FS2_EV = AMU_SI * 1e-20 / 1e-30 / ELECTRONVOLT_SI


def ase_velocity_to_ang_per_fs(v_ase):
    """ASE's velocity unit (Å per ASE time unit) to Å/fs."""
    from ase import units as ase_units

    return np.asarray(v_ase, dtype=np.float64) * ase_units.fs


def ang_per_fs_to_ase_velocity(v_ang_per_fs):
    from ase import units as ase_units

    return np.asarray(v_ang_per_fs, dtype=np.float64) / ase_units.fs


def ang_per_ps_to_ang_per_fs(v_ang_per_ps):
    """LAMMPS metal units (Å/ps) to Å/fs."""
    return np.asarray(v_ang_per_ps, dtype=np.float64) * 1e-3

#: κ from the Green–Kubo integral 1/(k_B T² V) ∫⟨J(t)J(0)⟩dt with J in eV·Å/fs, t in fs, k_B in eV/K,
#: V in Å³ (result in eV/(fs·Å·K)) to W/(m·K)
EV_PER_FS_ANG_K_TO_W_PER_MK = ELECTRONVOLT_SI / 1e-15 / 1e-10


def ev_ang_per_fs_to_ev_ang_per_ps(flux):
    """A volume-integrated heat flux from eV·Å/fs to LAMMPS metal's eV·Å/ps (sportran's ``metal``)."""
    return np.asarray(flux, dtype=np.float64) * 1e3


#: phonopy/phono3py group velocity THz·Å to m/s
THZ_ANG_TO_M_PER_S = 1e12 * 1e-10
#: a speed in m/s times a time in ps to nm
M_PER_S_PS_TO_NM = 1e-12 * 1e9
#: phono3py's linewidth Γ (THz, the imaginary part of the self-energy) to the lifetime τ = 1/(2·2πΓ) in ps
LINEWIDTH_THZ_TO_LIFETIME_PS = 1.0 / (4.0 * np.pi)
