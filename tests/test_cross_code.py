"""kappaflow's FORCE_CONSTANTS_2ND/3RD read back by a reader of their own, against fc2.hdf5/fc3.hdf5.

The ShengBTE files are read back by the reader below, written from the format description
(/work/shared/reference/formats.md §1-2: FORCE_CONSTANTS_2ND is the full N×N matrix with index − 1 →
ix fastest, then iy, iz, atom slowest; FORCE_CONSTANTS_3RD blocks carry R_j, R_k in Å, 1-based
primitive indices and 27 lines "l m n Φ", l slowest, eV/Å³), not with kappaflow.shengbte.  Every
atom is placed by its Cartesian position and matched to phonopy's supercell, so the rebuilt arrays do
not assume the writer's ordering.  A unit slip (eV/nm³, Ry/bohr²), a swapped index order, a wrong R
vector or a missing image weight breaks the element-by-element match.

κ from these files by a second BTE code (kALDo, with its own ShengBTE reader) against phono3py is in
tests/test_kaldo.py; an earlier κ test here ran phono3py twice on the two sets and was dropped.
"""

from __future__ import annotations

import numpy as np
import pytest

from kappaflow import reap, sow
from kappaflow.mock.potentials import stillinger_weber_si
from kappaflow.qe.pwin import read_pw_input
from kappaflow.structure import from_phonopy

from conftest import REPO

PAIR_CUTOFF_ANG = 3.0


# --- the independent reader ---------------------------------------------------------------------
def read_shengbte_fc2(path) -> tuple[int, dict]:
    """``(ntot, {(i, j): 3×3})`` with 1-based ShengBTE indices."""
    lines = open(path).read().split("\n")
    ntot = int(lines[0].split()[0])  # ShengBTE reads only the first integer
    blocks, pos = {}, 1
    for _ in range(ntot * ntot):
        i, j = (int(x) for x in lines[pos].split())
        blocks[(i, j)] = np.array([[float(x) for x in lines[pos + r].split()] for r in (1, 2, 3)])
        pos += 4
    assert len(blocks) == ntot * ntot
    return ntot, blocks


def read_shengbte_fc3(path) -> list[tuple]:
    """``[(R_j Å, R_k Å, i, j, k (1-based primitive), Φ[l,m,n] eV/Å³)]``."""
    tokens = [line.split() for line in open(path).read().split("\n") if line.strip()]
    n_blocks = int(tokens[0][0])
    out, pos = [], 1
    for b in range(n_blocks):
        assert int(tokens[pos][0]) == b + 1
        r_j = np.array([float(x) for x in tokens[pos + 1]])
        r_k = np.array([float(x) for x in tokens[pos + 2]])
        i, j, k = (int(x) for x in tokens[pos + 3])
        phi = np.zeros((3, 3, 3))
        for n_line in range(27):
            l, m, n, value = tokens[pos + 4 + n_line]
            phi[int(l) - 1, int(m) - 1, int(n) - 1] = float(value.replace("D", "E"))
        out.append((r_j, r_k, i, j, k, phi))
        pos += 31
    assert pos == len(tokens)
    return out


class SupercellLookup:
    """Cartesian position → phonopy supercell index (positions folded into the supercell)."""

    def __init__(self, supercell, tolerance_ang=1e-4):
        self.cell = np.asarray(supercell.cell, dtype=np.float64)
        self.frac = np.asarray(supercell.scaled_positions, dtype=np.float64)
        self.tol = tolerance_ang

    def index(self, cart) -> int:
        f = np.asarray(cart) @ np.linalg.inv(self.cell)
        d = self.frac - f
        d -= np.rint(d)
        dist = np.linalg.norm(d @ self.cell, axis=1)
        i = int(np.argmin(dist))
        assert dist[i] < self.tol, f"no supercell atom at {cart} (closest {dist[i]:.3e} Å)"
        return i


def rebuild_fc2(path, unit_cell, scell, lookup) -> np.ndarray:
    """Full (N, N, 3, 3) in phonopy's order from FORCE_CONSTANTS_2ND."""
    ntot, blocks = read_shengbte_fc2(path)
    n_prim = len(unit_cell["positions"])
    assert ntot == n_prim * int(np.prod(scell))

    def position(index):  # formats.md §2 split_index: ix fastest, then iy, iz, atom slowest
        n = index - 1
        ix, n = n % scell[0], n // scell[0]
        iy, n = n % scell[1], n // scell[1]
        iz, atom = n % scell[2], n // scell[2]
        return np.array([ix, iy, iz], dtype=np.float64) @ unit_cell["lattice"] + unit_cell["positions"][atom]

    where = [lookup.index(position(i)) for i in range(1, ntot + 1)]
    assert sorted(where) == list(range(ntot))
    fc2 = np.zeros((ntot, ntot, 3, 3))
    for (i, j), block in blocks.items():
        fc2[where[i - 1], where[j - 1]] = block
    return fc2


def rebuild_fc3(path, unit_cell, scell, supercell, lookup) -> np.ndarray:
    """Full (N, N, N, 3, 3, 3) from FORCE_CONSTANTS_3RD: blocks summed over the images of a triplet,
    the first atom taken to every cell by the supercell's lattice translations."""
    n = len(supercell.scaled_positions)
    tau = unit_cell["positions"]
    fc3 = np.zeros((n, n, n, 3, 3, 3))
    for r_j, r_k, i, j, k, phi in read_shengbte_fc3(path):
        a = lookup.index(tau[i - 1])
        b = lookup.index(r_j + tau[j - 1])
        c = lookup.index(r_k + tau[k - 1])
        fc3[a, b, c] += phi
    # the first atom in every cell: the lattice translations inside the (diagonal) supercell
    cart = np.asarray(supercell.scaled_positions) @ np.asarray(supercell.cell)
    firsts = [lookup.index(t) for t in tau]
    full = np.zeros_like(fc3)
    for cell in np.ndindex(*scell):
        shift = np.array(cell, dtype=np.float64) @ unit_cell["lattice"]
        perm = np.array([lookup.index(cart[s] + shift) for s in range(n)])
        for a in firsts:
            full[perm[a]][np.ix_(perm, perm)] = fc3[a]
    return full


def min_image_distances(supercell) -> np.ndarray:
    """(N, N) minimum-image distances (Å) between the supercell's atoms."""
    cell = np.asarray(supercell.cell, dtype=np.float64)
    frac = np.asarray(supercell.scaled_positions, dtype=np.float64)
    shifts = np.array(list(np.ndindex(5, 5, 5)), dtype=np.float64) - 2.0  # skewed cells: search images
    d = frac[None, :, :] - frac[:, None, :]
    d -= np.rint(d)
    return np.linalg.norm((d[:, :, None, :] + shifts[None, None, :, :]) @ cell, axis=3).min(axis=2)


# --- fixture: kappaflow's fc files from the mock potential, in process ------------------------
@pytest.fixture(scope="module")
def fc_files(tmp_path_factory):
    """Si 2×2×2 (2-atom cell), pair cutoff 3.0 Å, 0.01 Å: kappaflow's displacements, forces from the
    mock's Stillinger–Weber potential, kappaflow's reap and writers (fc2/fc3.hdf5 + ShengBTE)."""
    out = tmp_path_factory.mktemp("fc")
    unit = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    settings = sow.SowSettings(supercell_matrix=[2, 2, 2], pair_cutoff_ang=PAIR_CUTOFF_ANG)
    ph3 = sow.generate_displacements(unit, settings)
    calc = stillinger_weber_si()

    def forces(cell):
        atoms = from_phonopy(cell)
        atoms.calc = calc
        return np.asarray(atoms.get_forces(), dtype=np.float64)

    jobs = {"base": {0: forces(ph3.supercell)}, "fc3": {}}
    for index, cell in enumerate(ph3.supercells_with_displacements):
        if cell is not None:
            jobs["fc3"][index] = forces(cell)
    manifest = {"strategy": "systematic", "n_supercells_total": len(ph3.supercells_with_displacements),
                "fc2_supercell_matrix": None}
    reap.produce_force_constants(ph3, manifest, jobs, "traditional")
    paths = reap.write_force_constants(ph3, out)
    unit_cell = {"lattice": np.asarray(ph3.primitive.cell, dtype=np.float64),
                 "positions": np.asarray(ph3.primitive.scaled_positions) @ np.asarray(ph3.primitive.cell)}
    return ph3, paths, unit_cell


def test_shengbte_files_rebuild_the_hdf5_arrays(fc_files):
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    ph3, paths, unit_cell = fc_files
    lookup = SupercellLookup(ph3.supercell)
    fc2_h5 = read_fc2_from_hdf5(filename=str(paths["fc2"]))
    fc3_h5 = read_fc3_from_hdf5(filename=str(paths["fc3"]))
    fc2_sb = rebuild_fc2(paths["fc2_shengbte"], unit_cell, (2, 2, 2), lookup)
    fc3_sb = rebuild_fc3(paths["fc3_shengbte"], unit_cell, (2, 2, 2), ph3.supercell, lookup)
    assert np.abs(fc2_h5).max() > 1.0 and np.abs(fc3_h5).max() > 1.0  # eV/Å², eV/Å³ of Si
    assert np.abs(fc2_sb - fc2_h5).max() < 1e-13  # %22.15f
    # %.12e and blocks below 1e-8 eV/Å³ dropped by the writer.  Triplets whose three minimum-image
    # distances are within the pair cutoff must be in the file; a writer that applies the cutoff (as
    # thirdorder does) may leave out the others, which then read back as zero, never as anything else.
    tol = 1e-8 + 1e-11 * np.abs(fc3_h5).max()
    dist = min_image_distances(ph3.supercell)
    inside = ((dist[:, :, None] < PAIR_CUTOFF_ANG) & (dist[:, None, :] < PAIR_CUTOFF_ANG)
              & (dist[None, :, :] < PAIR_CUTOFF_ANG))
    error = np.abs(fc3_sb - fc3_h5).max(axis=(3, 4, 5))
    assert error[inside].max() < tol
    left_out = np.abs(fc3_sb).max(axis=(3, 4, 5)) < tol
    assert np.all((error < tol) | left_out)
    assert np.abs(fc3_h5[inside]).max() > 1.0  # the comparison covers the large constants
