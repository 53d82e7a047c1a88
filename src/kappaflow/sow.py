"""Sow: displaced supercells for third-order (and second-order) force constants.

Strategies
----------
``systematic``
    phono3py's pair displacements (one atom displaced, then a second one), amplitude 0.01 Å by default
    like thirdorder, restricted by a pair cutoff given in Å or as thirdorder's ``-n`` neighbour shells.
``random``
    N rattled supercells (every atom displaced by the amplitude in a random direction) for a
    least-squares fit with symfc; FC3 is fitted within the same cutoff (``pair_cutoff_ang`` or
    ``neighbour_shells``: every pair of a triplet closer than it; none: all triplets).  A set with fewer
    independent force equations (3N - 3 per supercell) than free FC2 + FC3 parameters (symfc's basis
    size) is refused here, before any pw.x run (:func:`check_random_set_determined`).

Each supercell becomes one pw.x input built from the user's supercell template (thirdorder's
``##NATOMS##``, ``##CELL##``, ``##COORDINATES##``, ``##NUMBER##``), written canonically and keyed by a hash
of the exact text and of the DFT engine (program, version, pseudopotential files: :func:`engine_key`).  An input that already exists in the store is never rewritten,
so its finished pw.x output stays valid when the sow is repeated with other settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from kappaflow.engine import IDENTITY_FILE, Engine, identity, key_header
from kappaflow.errors import ConfigError
from kappaflow.qe.pwin import PwInput, check_template, fill_template, parse_pw_input
from kappaflow.structure import from_phonopy, labels_of, supercell_matrix_3x3, to_phonopy  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

SHELL_TOLERANCE_ANG = 1e-4  # thirdorder's SYMPREC = 1e-5 nm


@dataclass
class SowSettings:
    supercell_matrix: list
    strategy: str = "systematic"
    amplitude_ang: float = 0.01
    pair_cutoff_ang: float | None = None
    neighbour_shells: int | None = None
    n_random: int = 20
    random_seed: int = 0
    fc2_supercell_matrix: list | None = None
    subtract_residual_forces: bool = True
    symprec: float = 1e-5


def make_phono3py(unitcell: Atoms, settings: SowSettings, log_level: int = 0):
    from phono3py import Phono3py

    fc2_matrix = settings.fc2_supercell_matrix
    return Phono3py(to_phonopy(unitcell), supercell_matrix=supercell_matrix_3x3(settings.supercell_matrix),
                    primitive_matrix=np.eye(3),
                    phonon_supercell_matrix=None if fc2_matrix is None else supercell_matrix_3x3(fc2_matrix),
                    symprec=settings.symprec, log_level=log_level)


def min_image_distances(unitcell: Atoms, supercell_matrix) -> np.ndarray:
    """(n_unit, n_super) shortest distances (Å) from each unit-cell atom to each supercell atom,
    over the 27 neighbouring supercell images (thirdorder's ``calc_dists``)."""
    from phonopy.structure.cells import get_supercell

    sc = get_supercell(to_phonopy(unitcell), supercell_matrix_3x3(supercell_matrix))
    lattice = np.asarray(sc.cell)
    pos = np.asarray(sc.scaled_positions) @ lattice
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ lattice
    u2s = sc.u2s_map
    d = pos[None, :, None, :] + images[None, None, :, :] - pos[u2s][:, None, None, :]
    return np.sqrt((d**2).sum(-1)).min(axis=-1)


def shell_cutoff_ang(unitcell: Atoms, supercell_matrix, n_shells: int) -> float:
    """thirdorder's ``-n`` rule: per atom the midpoint between its n-th and (n+1)-th neighbour shells;
    the cutoff is the maximum over atoms.  Too small a supercell: 1.1 × the largest distance."""
    if n_shells < 1:
        raise ConfigError(f"neighbour_shells must be >= 1, got {n_shells}")
    dist = min_image_distances(unitcell, supercell_matrix)
    cutoffs = []
    for row in dist:
        shells = []
        for value in np.sort(row):
            if not shells or value - shells[-1] > SHELL_TOLERANCE_ANG:
                shells.append(value)
        if len(shells) < n_shells + 2:
            log.warning("supercell too small for %d neighbour shells; using 1.1 x the largest distance",
                        n_shells)
            cutoffs.append(1.1 * shells[-1])
        else:
            cutoffs.append(0.5 * (shells[n_shells] + shells[n_shells + 1]))
    return float(max(cutoffs))


def effective_pair_cutoff(unitcell: Atoms, settings: SowSettings) -> float | None:
    if settings.pair_cutoff_ang is not None and settings.neighbour_shells is not None:
        raise ConfigError("give either sow.pair_cutoff_ang or sow.neighbour_shells, not both")
    if settings.neighbour_shells is not None:
        return shell_cutoff_ang(unitcell, settings.supercell_matrix, settings.neighbour_shells)
    return settings.pair_cutoff_ang


def fc3_cutoff_ang(unitcell: Atoms, settings: SowSettings) -> float | None:
    """The FC3 cutoff (Å) of the fit: the pair cutoff (systematic, random) from ``pair_cutoff_ang`` or
    ``neighbour_shells``; None: all triplets."""
    return effective_pair_cutoff(unitcell, settings)


def check_random_set_determined(unitcell: Atoms, settings: SowSettings) -> dict:
    """Refuse a random set that cannot determine its fit: ``n_random × (3N − 3)`` independent force
    equations against symfc's FC2 + FC3 basis size at the set's cutoff (:func:`kappaflow.fitsize.free_parameters`,
    the exact count).  Returns the counts; raises :class:`ConfigError` naming them."""
    from kappaflow.fitsize import free_parameters, independent_force_equations, underdetermined_message

    cutoff = fc3_cutoff_ang(unitcell, settings)
    n_atoms = len(unitcell) * round(abs(np.linalg.det(supercell_matrix_3x3(settings.supercell_matrix))))
    if cutoff is not None:
        distances = min_image_distances(unitcell, settings.supercell_matrix)
        nearest = float(distances[distances > 1e-8].min())
        if cutoff <= nearest:
            raise ConfigError(f"sow.strategy random: the FC3 cutoff {cutoff:.4f} Å is not beyond the nearest-"
                              f"neighbour distance {nearest:.4f} Å, so FC3 has nothing to fit: raise "
                              "sow.pair_cutoff_ang / sow.neighbour_shells")
    basis = free_parameters(unitcell, settings.supercell_matrix, cutoff, "exact", settings.symprec)
    n_parameters = int(basis["fc2"]) + int(basis["fc3"])
    equations = independent_force_equations(settings.n_random, n_atoms)
    if equations < n_parameters:
        raise ConfigError(underdetermined_message(n_parameters, int(basis["fc2"]), int(basis["fc3"]), cutoff,
                                                  settings.n_random, n_atoms,
                                                  f"sow.strategy random with sow.n_random = {settings.n_random}"))
    return {"n_parameters": n_parameters, "n_force_equations": equations, "fc3_cutoff_ang": cutoff}


def generate_displacements(unitcell: Atoms, settings: SowSettings):
    """A Phono3py object carrying the displacement dataset for the chosen strategy."""
    ph3 = make_phono3py(unitcell, settings)
    if settings.strategy == "systematic":
        ph3.generate_displacements(distance=settings.amplitude_ang,
                                   cutoff_pair_distance=effective_pair_cutoff(unitcell, settings),
                                   is_plusminus="auto")
    elif settings.strategy == "random":
        # one draw per snapshot (seed random_seed + i): raising n_random keeps the first snapshots, so
        # their pw.x results are reused (phono3py's single draw of all snapshots is not prefix-stable)
        snapshots = []
        for i in range(settings.n_random):
            seed = None if settings.random_seed is None else int(settings.random_seed) + i
            ph3.generate_displacements(distance=settings.amplitude_ang, number_of_snapshots=1,
                                       random_seed=seed, is_plusminus=False)
            snapshots.append(np.asarray(ph3.dataset["displacements"], dtype=float)[0])
        ph3.dataset = {"displacements": np.array(snapshots)}
    else:
        raise ConfigError(f"sow.strategy must be 'systematic' or 'random', got {settings.strategy!r}")
    if settings.fc2_supercell_matrix is not None:
        ph3.generate_fc2_displacements(distance=settings.amplitude_ang, is_plusminus="auto")
    return ph3


def engine_key(engine: Engine, text: str, source: str = "<input>") -> str:
    """The store key of the pw.x input ``text`` run by ``engine``: sha256 of the engine's identity (key
    scheme, engine tag, program version, sha256 of each pseudopotential file the input names; the mock
    reads none) and the exact text, 20 hex digits.  The one place store keys are made (sow, sweeps, the
    AIMD route, ``kappaflow plan``)."""
    return _key(identity(engine, text, source), text)


def _key(ident: dict, text: str) -> str:
    return hashlib.sha256((key_header(ident) + text).encode()).hexdigest()[:20]


def store_input(store_dir, engine: Engine, text: str, source: str = "<input>") -> str:
    """Write ``text`` as ``store_dir/<key>/pw.in`` (with ``engine.json``, what the key was made from)
    unless it exists; return the key.  An existing input is never touched (its mtime keeps a finished
    ``dft`` job finished), and several sows may write into one store at once (sweep points)."""
    ident = identity(engine, text, source)
    key = _key(ident, text)
    target = Path(store_dir) / key / "pw.in"
    if not target.exists():
        from kappaflow import atomic

        if not (target.parent / IDENTITY_FILE).exists():
            atomic.write_text(target.parent / IDENTITY_FILE, json.dumps(ident, indent=1))
        # linked into place only if no one did first (parallel sweep sows): pw.in is never rewritten
        atomic.create_exclusive(target, text)
    return key


def supercell_input_text(template_text: str, template_path: str, atoms: Atoms,
                         pw_overrides: dict | None = None) -> str:
    """Fill the template for one supercell, apply the config's namelist overrides, write canonically."""
    coords_digest = hashlib.sha256(np.round(atoms.get_scaled_positions(wrap=False), 12).tobytes())
    filled = fill_template(template_text, atoms, template_path, number=coords_digest.hexdigest()[:8])
    pw = parse_pw_input(filled, template_path)
    pw.require_free_atoms("a displaced supercell")
    if len(pw.atoms) != len(atoms):
        raise ConfigError(f"{template_path}: filled template has {len(pw.atoms)} atoms, expected {len(atoms)}")
    apply_overrides(pw, pw_overrides or {})
    return pw.to_text()


def apply_overrides(pw: PwInput, overrides: dict) -> None:
    for namelist, values in overrides.items():
        for key, value in (values or {}).items():
            if value is None:
                pw.remove(namelist, key)
            else:
                pw.set(namelist, key, value)


def sow(unitcell: Atoms, settings: SowSettings, template_path, store_dir, engine: Engine,
        pw_overrides: dict | None = None, disp_yaml_path=None, progress=None) -> dict:
    """Generate displacements, write new pw.x inputs into the store (keyed by :func:`engine_key`), and
    return the manifest."""
    template_path = str(template_path)
    template_text = Path(template_path).read_text()
    check_template(template_text, template_path)
    if settings.strategy == "random":
        check_random_set_determined(unitcell, settings)
    ph3 = generate_displacements(unitcell, settings)
    labels_unit = labels_of(unitcell)
    store_dir = Path(store_dir)
    jobs = []

    def unit_index_map(supercell) -> list[int]:
        return [supercell.u2u_map[s] for s in supercell.s2u_map]

    def add(role: str, index: int, cell, unit_indices):
        labels = [labels_unit[u] for u in unit_indices]
        atoms = from_phonopy(cell, labels)
        text = supercell_input_text(template_text, template_path, atoms, pw_overrides)
        key = store_input(store_dir, engine, text, template_path)
        jobs.append({"key": key, "role": role, "index": index, "n_atoms": len(atoms)})

    s2u = unit_index_map(ph3.supercell)
    if settings.subtract_residual_forces:
        add("base", 0, ph3.supercell, s2u)
    cells = ph3.supercells_with_displacements
    n_total = len(cells)
    for i, cell in enumerate(cells):
        if cell is not None:
            add("fc3", i, cell, s2u)
        if progress and (i + 1) % 500 == 0:
            progress(f"sow: {i + 1}/{n_total} supercells written")
    if settings.fc2_supercell_matrix is not None:
        s2u2 = unit_index_map(ph3.phonon_supercell)
        if settings.subtract_residual_forces:
            add("fc2_base", 0, ph3.phonon_supercell, s2u2)
        for i, cell in enumerate(ph3.phonon_supercells_with_displacements):
            add("fc2", i, cell, s2u2)
    if disp_yaml_path is not None:
        ph3.save(str(disp_yaml_path))
    n_fc3 = sum(1 for j in jobs if j["role"] == "fc3")
    return {
        "strategy": settings.strategy,
        "supercell_matrix": supercell_matrix_3x3(settings.supercell_matrix).tolist(),
        "fc2_supercell_matrix": (None if settings.fc2_supercell_matrix is None
                                 else supercell_matrix_3x3(settings.fc2_supercell_matrix).tolist()),
        "amplitude_ang": settings.amplitude_ang,
        "pair_cutoff_ang": effective_pair_cutoff(unitcell, settings) if settings.strategy == "systematic"
        else None,
        "fc3_cutoff_ang": fc3_cutoff_ang(unitcell, settings),
        "n_supercells_total": n_total,
        "n_displaced_fc3": n_fc3,
        "n_displaced_fc2": sum(1 for j in jobs if j["role"] == "fc2"),
        "engine": engine.tag,
        "engine_version": engine.version,
        "jobs": jobs,
    }


def write_manifest(path, manifest: dict) -> None:
    Path(path).write_text(json.dumps(manifest, indent=1))


def read_manifest(path) -> dict:
    return json.loads(Path(path).read_text())


def load_phono3py(disp_yaml_path, log_level: int = 0):
    """The sow's phono3py_disp.yaml as a Phono3py object (unit cell as primitive; no force constants)."""
    import phono3py

    return phono3py.load(str(disp_yaml_path), primitive_matrix=np.eye(3).tolist(), produce_fc=False,
                         log_level=log_level)
