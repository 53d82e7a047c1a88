"""A thirdorder set built the way ``thirdorder_espresso.py unitcell.in sow na nb nc cutoff template`` builds
it, written test-side from the description in /work/shared/reference/formats.md §1 (not from phono3py's
pair displacements and not with kappaflow's sow):

* the supercell in thirdorder's atom order ``product(range(nc), range(nb), range(na), range(natoms))``;
* minimum-image distances over the 27 neighbouring supercells, images tied within 1e-4 nm² (``calc_dists``);
* the cutoff: a positive number (here Å) or ``-n`` = the midpoint between the n-th and (n+1)-th
  neighbour shells, maximum over the unit-cell atoms;
* the irreducible triplets (thirdorder's ``Wedge``): every triplet (i in the home cell, j, k) whose
  distances i–j, i–k and the best-image j–k are below the cutoff, reduced by the 6 index permutations
  × the space group (spglib's operations on the unit cell; an image is moved so that its first atom
  sits in the home cell); per irreducible triplet the independent Cartesian components are the
  columns of its invariance constraints (Φ = P·S Φ for the operations that map the triplet onto
  itself) that do not raise the rank of the columns before them;
* ``list4``: the distinct (i, j, α, β) of those independent components (i, j: the first two atoms of
  the triplet, α, β: their directions) in order of appearance; ``nirred = len(list4)``;
* run ``nirred·n + e + 1`` (n = 0..3) moves atom j along β by ``(-1)**(n//2)·H`` and atom i along α by
  ``-(-1)**(n%2)·H``, H = 0.01 Å (both onto the same atom when i == j: the (+h, −h) runs have zero net
  displacement);
* files ``BASE.<template>`` and ``DISP.<template>.NNN``, NNN zero-padded to ``len(str(4*(nirred+1)))``;
  the template's ``##NATOMS##``, ``##CELL##`` (``CELL_PARAMETERS angstrom``) and ``##COORDINATES##``
  (``ATOMIC_POSITIONS crystal``, unit-cell labels) replaced, numbers as ``{:>20.15g}``.

Forces come from the mock pw.x's own calculator and output writer, called in process (genuine pw.x
6.7 output layout, read by kappaflow's strict parser like any real run).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

H_ANG = 0.01  # thirdorder's H = 1e-3 nm
SYMPREC_ANG = 1e-4  # thirdorder's SYMPREC = 1e-5 (nm)
DEGENERATE_D2_ANG2 = 1e-2  # calc_dists: |d² - d²min| < 1e-4 nm²
SHIFTS27 = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.int64)
PERMUTATIONS = [(0, 1, 2), (1, 0, 2), (2, 1, 0), (0, 2, 1), (1, 2, 0), (2, 0, 1)]


@dataclass
class ThirdorderSupercell:
    lattice_ang: np.ndarray  # rows: supercell vectors (Å)
    frac: np.ndarray  # (ntot, 3) fractional coordinates of the supercell
    labels: list
    ngrid: tuple
    natoms: int
    unit_lattice_ang: np.ndarray
    unit_frac: np.ndarray
    unit_labels: list

    @property
    def cart(self) -> np.ndarray:
        return self.frac @ self.lattice_ang

    def index(self, cell, species) -> int:  # thirdorder's _ind2id
        na, nb, _ = self.ngrid
        return int((cell[0] + (cell[1] + cell[2] * nb) * na) * self.natoms + species)

    def cell_and_species(self, index):
        tmp, species = divmod(int(index), self.natoms)
        tmp, c0 = divmod(tmp, self.ngrid[0])
        c2, c1 = divmod(tmp, self.ngrid[1])
        return np.array([c0, c1, c2]), species


def thirdorder_supercell(unit_lattice_ang, unit_frac, unit_labels, ngrid) -> ThirdorderSupercell:
    na, nb, nc = ngrid
    unit_frac = np.asarray(unit_frac, dtype=np.float64)
    natoms = len(unit_frac)
    frac, labels = [], []
    for k, j, i, a in itertools.product(range(nc), range(nb), range(na), range(natoms)):
        frac.append((unit_frac[a] + (i, j, k)) / np.array(ngrid, dtype=np.float64))
        labels.append(unit_labels[a])
    lattice = np.asarray(unit_lattice_ang, dtype=np.float64) * np.array(ngrid, dtype=np.float64)[:, None]
    return ThirdorderSupercell(lattice, np.array(frac), labels, tuple(ngrid), natoms,
                               np.asarray(unit_lattice_ang, dtype=np.float64), unit_frac, list(unit_labels))


def calc_dists(sc: ThirdorderSupercell):
    """dmin (ntot, ntot) Å; images[i][j] = the shift vectors (of the supercell) at the minimum distance."""
    cart = sc.cart
    shifts_cart = SHIFTS27 @ sc.lattice_ang
    d2 = ((cart[None, :, None, :] + shifts_cart[None, None, :, :] - cart[:, None, None, :]) ** 2).sum(-1)
    d2min = d2.min(axis=2)
    degenerate = np.abs(d2 - d2min[:, :, None]) < DEGENERATE_D2_ANG2
    return np.sqrt(d2min), degenerate


def shell_cutoff_ang(sc: ThirdorderSupercell, dmin, n: int) -> float:
    """calc_frange: per unit-cell atom 0.5*(u[n] + u[n+1]) of its sorted distinct distances; max."""
    out = []
    for i in range(sc.natoms):
        u = []
        for value in np.sort(dmin[i]):
            if not any(np.isclose(value / 10, w / 10, rtol=1e-5, atol=1e-8) for w in u):  # nm, allclose
                u.append(value)
        out.append(0.5 * (u[n] + u[n + 1]) if len(u) > n + 1 else 1.1 * max(u))
    return float(max(out))


def triplets_within(sc: ThirdorderSupercell, dmin, degenerate, frange_ang: float):
    """Triplets (i in the home cell, j, k) of thirdorder's rule, in its scan order."""
    cart = sc.cart
    out = []
    for i in range(sc.natoms):
        near = np.flatnonzero(dmin[i] < frange_ang)
        images = {j: cart[j] + SHIFTS27[degenerate[i, j]] @ sc.lattice_ang for j in near}
        for j in near:
            for k in near:
                d2 = ((images[j][:, None, :] - images[k][None, :, :]) ** 2).sum(-1).min()
                if d2 < frange_ang**2:
                    out.append((i, int(j), int(k)))
    return out


def symmetry_permutations(sc: ThirdorderSupercell) -> np.ndarray:
    """(n_ops, ntot): the supercell atom each space-group operation sends each atom to, and the
    Cartesian rotations (n_ops, 3, 3)."""
    import spglib

    types = {label: n for n, label in enumerate(dict.fromkeys(sc.unit_labels))}
    cell = (sc.unit_lattice_ang, sc.unit_frac, [types[s] for s in sc.unit_labels])
    sym = spglib.get_symmetry(cell, symprec=SYMPREC_ANG)
    rotations, translations = sym["rotations"], sym["translations"]
    assert np.array_equal(rotations[0], np.eye(3)) and np.allclose(translations[0], 0)
    a = sc.unit_lattice_ang.T  # columns: lattice vectors
    crot = np.array([a @ r @ np.linalg.inv(a) for r in rotations])
    ngrid = np.array(sc.ngrid)
    # supercell atom -> (cell, species) in unit-cell fractional coordinates
    unit_frac_of_atom = sc.frac * ngrid
    maps = np.empty((len(rotations), len(sc.frac)), dtype=np.int64)
    for s, (r, t) in enumerate(zip(rotations, translations)):
        image = unit_frac_of_atom @ r.T + t  # fractional (unit cell) coordinates after the operation
        for atom, x in enumerate(image):
            d = x[None, :] - sc.unit_frac
            found = np.flatnonzero(np.abs(d - np.round(d)).max(axis=1) < 1e-5 * 10)
            assert len(found) == 1, (s, atom, found)
            species = int(found[0])
            cell = np.round(d[species]).astype(int) % ngrid
            maps[s, atom] = sc.index(cell, species)
    return maps, crot


def _tensor_operation(c: np.ndarray, perm) -> np.ndarray:
    """27×27 M with (S·P Φ)[α'β'γ'] = Σ_w M[α'β'γ', w] Φ[w]: the components of the permuted triplet
    (w_{p0}, w_{p1}, w_{p2}) rotated by c."""
    m = np.zeros((27, 27))
    for w in itertools.product(range(3), repeat=3):
        col = w[0] * 9 + w[1] * 3 + w[2]
        wp = (w[perm[0]], w[perm[1]], w[perm[2]])
        for out in itertools.product(range(3), repeat=3):
            m[out[0] * 9 + out[1] * 3 + out[2], col] = c[out[0], wp[0]] * c[out[1], wp[1]] * c[out[2], wp[2]]
    return m


def independent_components(constraints: np.ndarray) -> list[int]:
    """Columns that do not raise the rank of the columns before them (the free columns of the
    reduced row echelon form of the constraint matrix)."""
    if constraints.size == 0:
        return list(range(27))
    free, rank = [], 0
    for k in range(27):
        r = np.linalg.matrix_rank(constraints[:, :k + 1], tol=1e-8)
        if r == rank:
            free.append(k)
        rank = r
    return free


@dataclass
class Wedge:
    frange_ang: float
    triplets: list  # all triplets within the cutoff (thirdorder's summ)
    irreducible: list  # representatives (thirdorder's llist)
    list4: list  # (i, j, alpha, beta)


def wedge(sc: ThirdorderSupercell, frange_ang: float) -> Wedge:
    dmin, degenerate = calc_dists(sc)
    triplets = triplets_within(sc, dmin, degenerate, frange_ang)
    maps, crot = symmetry_permutations(sc)
    ops = [[_tensor_operation(c, p) for c in crot] for p in PERMUTATIONS]
    ngrid = np.array(sc.ngrid)

    def home(triplet):
        cells_species = [sc.cell_and_species(t) for t in triplet]
        origin = cells_species[0][0]
        return tuple(sc.index((cell - origin) % ngrid, species) for cell, species in cells_species)

    seen: set = set()
    irreducible, list4 = [], {}
    for triplet in triplets:
        if triplet in seen:
            continue
        irreducible.append(triplet)
        rows = []
        for p_index, perm in enumerate(PERMUTATIONS):
            permuted = tuple(triplet[q] for q in perm)
            for s in range(len(crot)):
                image = home(tuple(int(maps[s, t]) for t in permuted))
                seen.add(image)
                if image == triplet:
                    rows.append(ops[p_index][s] - np.eye(27))
        constraints = np.vstack(rows)
        constraints[np.abs(constraints) < 1e-12] = 0.0
        for comp in independent_components(constraints):
            alpha, beta = comp // 9, (comp % 9) // 3
            list4.setdefault((triplet[0], triplet[1], alpha, beta), None)
    return Wedge(frange_ang, triplets, irreducible, list(list4))


def cutoff_ang(sc: ThirdorderSupercell, cutoff: float) -> float:
    """thirdorder's cutoff argument (here a positive number is in Å, not nm; -n = n shells)."""
    if cutoff < 0:
        dmin, _ = calc_dists(sc)
        return shell_cutoff_ang(sc, dmin, int(round(-cutoff)))
    return float(cutoff)


def fill_template(template: str, lattice_ang, frac, labels) -> str:
    """thirdorder_espresso's write_supercell: ##NATOMS##, ##CELL##, ##COORDINATES## (##NUMBER## too)."""
    for tag in ("##CELL##", "##NATOMS##", "##COORDINATES##"):
        assert tag in template, tag
    cell = "CELL_PARAMETERS angstrom\n" + "\n".join(
        " ".join(f"{x:>20.15g}" for x in row) for row in np.asarray(lattice_ang).tolist())
    coords = "ATOMIC_POSITIONS crystal\n" + "\n".join(
        f"{label} " + " ".join(f"{x:>20.15g}" for x in row) for label, row in zip(labels, np.asarray(frac).tolist()))
    return (template.replace("##NATOMS##", str(len(labels))).replace("##CELL##", cell)
            .replace("##COORDINATES##", coords))


@dataclass
class SownSet:
    supercell: ThirdorderSupercell
    wedge: Wedge
    base_name: str
    disp_names: list  # in run-number order
    displacements_ang: np.ndarray  # (nruns, ntot, 3) in thirdorder's atom order


def sow(directory, unit_lattice_ang, unit_frac, unit_labels, ngrid, cutoff, template_path) -> SownSet:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sc = thirdorder_supercell(unit_lattice_ang, unit_frac, unit_labels, ngrid)
    w = wedge(sc, cutoff_ang(sc, cutoff))
    template = Path(template_path).read_text()
    name = Path(template_path).name
    base_name = f"BASE.{name}"
    (directory / base_name).write_text(fill_template(template, sc.lattice_ang, sc.frac, sc.labels))
    nirred = len(w.list4)
    width = len(str(4 * (nirred + 1)))
    inv = np.linalg.inv(sc.lattice_ang)
    names = [None] * (4 * nirred)
    displacements = np.zeros((4 * nirred, len(sc.frac), 3))
    for e_index, (i, j, alpha, beta) in enumerate(w.list4):
        for n in range(4):
            isign = (-1) ** (n // 2)
            jsign = -((-1) ** (n % 2))
            number = nirred * n + e_index + 1
            u = np.zeros((len(sc.frac), 3))
            u[j, beta] += isign * H_ANG
            u[i, alpha] += jsign * H_ANG
            frac = sc.frac + u @ inv
            disp_name = f"DISP.{name}.{number:0{width}d}"
            (directory / disp_name).write_text(fill_template(template, sc.lattice_ang, frac, sc.labels))
            names[number - 1] = disp_name
            displacements[number - 1] = u
    return SownSet(sc, w, base_name, names, displacements)


def mock_output_text(input_path, calc) -> str:
    """The pw.x output ``kappaflow-mock-pw`` prints for an scf input, from its calculator and writer (in
    process: the mock's ~2 s start-up per run would dominate)."""
    from kappaflow.mock import pw as mock
    from kappaflow.qe.pwin import read_pw_input

    pw = read_pw_input(input_path)
    buffer = io.StringIO()
    writer = mock.PwWriter(pw, buffer, None)
    writer.header(pw.calculation)
    mock.run_scf(pw, calc, writer)
    writer.footer()
    return buffer.getvalue()


def write_mock_outputs(directory, names, model: str, suffix: str = ".out") -> None:
    """pw.x-format outputs ``NAME<suffix>`` of the inputs ``names`` in ``directory``: the lines
    ``kappaflow-mock-pw --model <model> -in NAME`` prints."""
    from kappaflow.mock import pw as mock

    directory = Path(directory)
    calc = mock.make_calculator(model)
    for name in names:
        (directory / f"{name}{suffix}").write_text(mock_output_text(directory / name, calc))
