"""``kappaflow init``: a new material from a structure file, in one command.

From a CIF, a POSCAR or any file ASE reads, plus a pseudopotential directory and a functional, write

- ``<systems_dir>/<name>/<name>.scf.in``: the unit-cell pw.x input (spglib's standardised primitive cell,
  ``CELL_PARAMETERS angstrom``, k-mesh from ``k_spacing``);
- ``<systems_dir>/<name>/<name>.sc.in``: the thirdorder-style supercell template (``##NATOMS##``,
  ``##CELL##``, ``##COORDINATES##``; the k-mesh divided by the supercell repeats, rounded up);
- ``<systems_dir>/<name>.yaml``: the system file, with the FC3 supercell and cutoff proposed by
  :mod:`kappaflow.plan` (its cost table is printed).

It stops, naming the file and the problem, on a file ASE cannot read, a structure spglib cannot
symmetrise (or with atoms on top of each other), and a species without a pseudopotential of the
functional in the directory.  docs/init.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kappaflow.errors import ConfigError, InputFileError, KappaflowError

__all__ = ["read_and_symmetrise", "find_pseudopotentials", "k_mesh", "init_system", "Pseudo"]

#: the closest two atoms may be before the structure is refused (Å)
MIN_DISTANCE_ANG = 0.5
#: supercell candidates: the smallest diagonal repeats whose every lattice vector reaches these lengths (Å)
SUPERCELL_TARGETS_ANG = (7.0, 10.0, 13.0)
#: FC3 cutoffs the plan compares (thirdorder's -n: n neighbour shells)
CUTOFF_SHELLS = (2, 3)


def read_and_symmetrise(path, symprec: float = 1e-3):
    """The structure in ``path`` as spglib's standardised primitive cell (ASE Atoms) and its space group."""
    import ase.io
    import spglib
    from ase import Atoms

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such structure file")
    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # ASE's readers raise anything from ValueError to AttributeError on bad files
        raise InputFileError(path, f"ASE cannot read a structure from it ({type(exc).__name__}: {exc})") from None
    if len(atoms) == 0:
        raise InputFileError(path, "the structure has no atoms")
    if not atoms.cell.rank == 3 or abs(atoms.cell.volume) < 1e-6:
        raise InputFileError(path, "the structure has no three-dimensional cell (a crystal is needed)")
    if len(atoms) > 1:
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < MIN_DISTANCE_ANG:
            raise InputFileError(path, f"atoms {i + 1} and {j + 1} ({atoms[i].symbol}, {atoms[j].symbol}) are "
                                       f"{d[i, j]:.3f} Å apart (below {MIN_DISTANCE_ANG} Å): overlapping sites; "
                                       "a CIF with partial occupancies must be ordered first")
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    try:
        dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
        std = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=symprec)
    except Exception as exc:  # spglib >= 2.5 raises SpglibError where older ones return None
        dataset, std, why = None, None, str(exc)
    else:
        why = getattr(spglib, "get_error_message", lambda: "no dataset")()
    if dataset is None:
        raise InputFileError(path, f"spglib cannot symmetrise the structure at symprec {symprec:g} Å ({why})")
    if std is None:
        raise InputFileError(path, f"spglib cannot standardise the structure at symprec {symprec:g} Å")
    lattice, frac, numbers = std
    prim = Atoms(numbers=numbers, cell=lattice, scaled_positions=frac, pbc=True)
    return prim, f"{dataset.international} (No. {dataset.number})", atoms


@dataclass
class Pseudo:
    element: str
    file: str
    kind: str  # NC, US, PAW or "?"
    ecutwfc_ry: float | None  # the file's suggested minimum cutoffs, when it states them
    ecutrho_ry: float | None
    alternatives: list


_SUGGESTED = re.compile(r"Suggested minimum cutoff for (wavefunctions|charge density):\s*([\d.]+)\s*Ry", re.I)


def _upf_header(path: Path) -> tuple[str, float | None, float | None]:
    text = path.read_text(errors="replace")[:20000]
    kind = "?"
    m = re.search(r'pseudo_type\s*=\s*"(\w+)"', text)
    if m:
        kind = m.group(1).upper()
    elif re.search(r"^\s*US\s", text, re.M):
        kind = "US"
    elif re.search(r"^\s*PAW\s", text, re.M):
        kind = "PAW"
    elif re.search(r"^\s*NC\s", text, re.M):
        kind = "NC"
    if kind == "SL":
        kind = "NC"
    wfc = rho = None
    for what, value in _SUGGESTED.findall(text):
        if what.lower().startswith("wave"):
            wfc = float(value)
        else:
            rho = float(value)
    return kind, wfc, rho


def find_pseudopotentials(elements, pseudo_dir, functional: str, overrides: dict | None = None,
                          structure_path=None) -> dict[str, Pseudo]:
    """One pseudopotential per element: ``<El>.<functional>-*.UPF`` / ``<El>.<functional>.UPF`` in
    ``pseudo_dir`` (Quantum ESPRESSO's naming; the relativistic ``<El>.rel-…`` files only when asked for by
    name), PSlibrary's first when there are several; ``overrides`` ``{El: file}`` wins.  A species without one
    stops, naming the structure, the species and the directory."""
    pseudo_dir = Path(pseudo_dir)
    if not pseudo_dir.is_dir():
        raise ConfigError(f"--pseudo-dir {pseudo_dir}: no such directory")
    overrides = dict(overrides or {})
    files = sorted(p.name for p in pseudo_dir.iterdir() if p.is_file())
    out, missing = {}, []
    func = functional.lower()
    for el in elements:
        if el in overrides:
            name = overrides.pop(el)
            if not (pseudo_dir / name).is_file():
                raise ConfigError(f"--pseudo {el}={name}: no file {pseudo_dir / name}")
            matches = [name]
        else:
            pattern = re.compile(rf"^{re.escape(el)}[._]{re.escape(func)}([-_.].*)?\.upf$", re.I)
            matches = sorted((f for f in files if pattern.match(f)), key=lambda f: ("psl" not in f.lower(), f))
        if not matches:
            missing.append(el)
            continue
        kind, wfc, rho = _upf_header(pseudo_dir / matches[0])
        out[el] = Pseudo(el, matches[0], kind, wfc, rho, matches[1:])
    if overrides:
        raise ConfigError(f"--pseudo: {', '.join(sorted(overrides))} not in the structure ({', '.join(elements)})")
    if missing:
        where = f"{structure_path}: " if structure_path else ""
        raise KappaflowError(f"{where}no {functional} pseudopotential for {', '.join(missing)} in {pseudo_dir} "
                             f"(looked for <El>.{func}-*.UPF); give one with --pseudo {missing[0]}=<file>, or "
                             "another --pseudo-dir / --functional")
    return out


def k_mesh(cell_ang, spacing_per_ang: float) -> list[int]:
    """The Monkhorst–Pack mesh with k-points at most ``spacing_per_ang`` apart (2π included, as ASE's
    ``kspacing``): n_i = ceil(|b_i| / spacing)."""
    if spacing_per_ang <= 0:
        raise ConfigError(f"k-spacing {spacing_per_ang:g} 1/Å must be positive")
    b = 2 * np.pi * np.linalg.inv(np.asarray(cell_ang, dtype=np.float64)).T
    return [max(1, int(math.ceil(np.linalg.norm(v) / spacing_per_ang - 1e-9))) for v in b]


def _supercell_candidates(cell_ang) -> list[list[int]]:
    lengths = np.linalg.norm(np.asarray(cell_ang), axis=1)
    out = []
    for target in SUPERCELL_TARGETS_ANG:
        sc = [max(1, int(math.ceil(target / length - 1e-9))) for length in lengths]
        if sc not in out:
            out.append(sc)
    return out


def _pw_input(name: str, prim, pseudos: dict, pseudo_dir, ecutwfc: float, ecutrho: float | None, conv_thr: str,
              mesh, extra_system: dict):
    """The scf input of ``prim`` as a :class:`kappaflow.qe.pwin.PwInput` (written by the canonical writer)."""
    from collections import OrderedDict

    from ase.data import atomic_masses, atomic_numbers

    from kappaflow.qe.pwin import PwInput, Species

    system = OrderedDict(ecutwfc=f"{ecutwfc:g}")
    if ecutrho is not None:
        system["ecutrho"] = f"{ecutrho:g}"
    system.update(extra_system)
    namelists = OrderedDict(
        control=OrderedDict(calculation="'scf'", prefix=f"'{name}'", outdir="'./tmp'", pseudo_dir=f"'{pseudo_dir}'",
                            tprnfor=".true.", tstress=".true."),
        system=system, electrons=OrderedDict(conv_thr=conv_thr))
    species = [Species(el, float(atomic_masses[atomic_numbers[el]]), p.file) for el, p in pseudos.items()]
    return PwInput(namelists, species, prim.copy(), f"K_POINTS automatic\n  {' '.join(map(str, mesh))} 0 0 0")


def init_system(structure_path, name: str, pseudo_dir, functional: str, systems_dir="config/systems",
                k_spacing_per_ang: float = 0.25, q_spacing_per_ang: float = 0.1, ecutwfc_ry: float | None = None,
                ecutrho_ry: float | None = None, pseudo_overrides: dict | None = None, smearing: str | None = None,
                force: bool = False, plan: bool = True, log=print) -> dict:
    """Write the unit-cell input, the supercell template and the system file (module docstring); returns
    what was written and chosen."""
    import yaml

    from kappaflow import atomic
    from kappaflow.qe.pwin import (check_template, format_cell_card, format_positions_card, parse_pw_input,
                                   write_pw_input)

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"--name {name!r}: letters, digits, '_', '-', '.' only (it names files and results/<name>)")
    systems_dir = Path(systems_dir)
    system_file = systems_dir / f"{name}.yaml"
    folder = systems_dir / name
    unit_path, template_path = folder / f"{name}.scf.in", folder / f"{name}.sc.in"
    existing = [p for p in (system_file, unit_path, template_path) if p.exists()]
    if existing and not force:
        raise KappaflowError(f"{existing[0]} exists: choose another --name, or --force to overwrite")
    pseudo_dir = Path(pseudo_dir).resolve()  # the inputs name it for pw.x, which runs elsewhere
    prim, spacegroup, given = read_and_symmetrise(structure_path)
    elements = list(dict.fromkeys(prim.get_chemical_symbols()))
    pseudos = find_pseudopotentials(elements, pseudo_dir, functional, pseudo_overrides, structure_path)
    kinds = {p.kind for p in pseudos.values()}
    if ecutwfc_ry is None:
        suggested = [p.ecutwfc_ry for p in pseudos.values() if p.ecutwfc_ry]
        if len(suggested) < len(pseudos):
            silent = [p.file for p in pseudos.values() if not p.ecutwfc_ry]
            raise KappaflowError(f"{', '.join(silent)}: no suggested cutoff in the file; give --ecutwfc (Ry) "
                                 "after a convergence test")
        ecutwfc_ry = max(suggested)
    if ecutrho_ry is None:
        rho = [p.ecutrho_ry for p in pseudos.values() if p.ecutrho_ry]
        if rho:
            ecutrho_ry = max(max(rho), 4 * ecutwfc_ry)
        elif kinds & {"US", "PAW"}:
            ecutrho_ry = 8 * ecutwfc_ry  # ultrasoft/PAW: pw.x's default 4x is too low
    extra = {}
    if smearing:
        extra = {"occupations": "'smearing'", "smearing": f"'{smearing}'", "degauss": "0.01"}
    unit_mesh = k_mesh(prim.cell.array, k_spacing_per_ang)
    q_mesh = k_mesh(prim.cell.array, q_spacing_per_ang)
    header = (f"! {name}: {prim.get_chemical_formula()} {spacegroup}, from {Path(structure_path).name} by kappaflow init"
              f" (spglib's standardised primitive cell); {functional}, k-points at most {k_spacing_per_ang:g} 1/Å apart")
    unit_text = f"{header}\n" + write_pw_input(_pw_input(name, prim, pseudos, pseudo_dir, ecutwfc_ry, ecutrho_ry,
                                                          "1d-10", unit_mesh, extra))
    parse_pw_input(unit_text, str(unit_path))  # what we write must read back

    def template(supercell):
        """The supercell template: the canonical writer's input with thirdorder's placeholders for the
        structure; conv_thr 1d-12 (1d-10 leaves SCF force errors above reap.max_scf_correction_ev_per_ang)."""
        mesh = [max(1, int(math.ceil(k / n))) for k, n in zip(unit_mesh, supercell)]
        text = write_pw_input(_pw_input(name, prim, pseudos, pseudo_dir, ecutwfc_ry, ecutrho_ry, "1d-12", mesh, extra))
        for written, placeholder in ((format_cell_card(prim), "##CELL##"),
                                     (format_positions_card(prim), "##COORDINATES##"),
                                     (f"  nat = {len(prim)}\n", "  nat = ##NATOMS##\n")):
            if text.count(written) != 1:  # the writer's layout changed: the placeholders would be wrong
                raise KappaflowError(f"init: the canonical pw.x writer wrote {written.splitlines()[0]!r} "
                                     f"{text.count(written)} times, expected once")
            text = text.replace(written, placeholder)
        check_template(text, str(template_path))
        return (f"! Supercell template of {name} (thirdorder placeholders): the unit cell's k-mesh "
                f"{'x'.join(map(str, unit_mesh))} / the supercell {'x'.join(map(str, supercell))}; conv_thr 1d-12: "
                f"1d-10 leaves SCF force errors above reap.max_scf_correction_ev_per_ang\n{text}")

    candidates = _supercell_candidates(prim.cell.array)
    system = {"description": f"{prim.get_chemical_formula()} ({spacegroup}), {functional}, {ecutwfc_ry:g} Ry, "
                             f"from {Path(structure_path).name} (kappaflow init)",
              "unitcell": f"{name}/{unit_path.name}", "supercell_template": f"{name}/{template_path.name}",
              "dft": {"pseudo_dir": str(pseudo_dir)},
              "relax": {"enabled": True},
              "sow": {"strategy": "systematic", "supercell": candidates[0], "amplitude_ang": 0.01,
                      "neighbour_shells": CUTOFF_SHELLS[-1]},
              "bte": {"method": "rta", "mesh": q_mesh, "temperatures": {"min": 100, "max": 800, "step": 50}}}
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(unit_path, unit_text)
    atomic.write_text(template_path, template(candidates[0]))
    atomic.write_text(system_file, yaml.safe_dump(system, sort_keys=False, default_flow_style=None))
    log(f"init: {structure_path}: {len(given)} atoms as given -> {len(prim)}-atom primitive cell, {spacegroup}")
    for el, p in pseudos.items():
        alt = f" (also: {', '.join(p.alternatives)}; --pseudo {el}=<file> to choose)" if p.alternatives else ""
        log(f"init: {el}: {p.file} ({p.kind}){alt}")
    log(f"init: ecutwfc {ecutwfc_ry:g} Ry" + (f", ecutrho {ecutrho_ry:g} Ry" if ecutrho_ry else "")
        + f"; k-mesh {'x'.join(map(str, unit_mesh))} (spacing {k_spacing_per_ang:g} 1/Å); "
          f"BTE q-mesh {'x'.join(map(str, q_mesh))} (spacing {q_spacing_per_ang:g} 1/Å)")
    chosen = {"supercell": candidates[0], "neighbour_shells": CUTOFF_SHELLS[-1], "reason": "no plan"}
    if plan:
        chosen = _plan_and_choose(system_file, candidates, log)
        system["sow"]["supercell"] = chosen["supercell"]
        system["sow"]["neighbour_shells"] = chosen["neighbour_shells"]
        atomic.write_text(template_path, template(chosen["supercell"]))
        atomic.write_text(system_file, f"# {chosen['reason']}\n" + yaml.safe_dump(system, sort_keys=False, default_flow_style=None))
    log(f"init: wrote {system_file}, {unit_path}, {template_path}")
    log(f"init: next: snakemake -n --configfile {system_file}   (then without -n; kappaflow plan {system_file} "
        "to price other settings)")
    return {"system_file": system_file, "unitcell": unit_path, "template": template_path, "spacegroup": spacegroup,
            "n_atoms": len(prim), "pseudopotentials": {el: p.file for el, p in pseudos.items()},
            "k_mesh": unit_mesh, "q_mesh": q_mesh, "ecutwfc_ry": ecutwfc_ry, "ecutrho_ry": ecutrho_ry, **chosen}


def _plan_and_choose(system_file, candidates, log) -> dict:
    """Price the candidate supercells x cutoffs with kappaflow.plan (the table is printed), and choose the
    cheapest with the larger cutoff inside the supercell (half its shortest image distance)."""
    from kappaflow import config, plan

    cfg = config.resolve({"system": str(system_file)})
    cfg["plan"] = dict(cfg.get("plan") or {}, fc3_basis="estimate")
    cands = [plan.Candidate(sc, -float(n), "systematic") for sc in candidates for n in CUTOFF_SHELLS]
    result = plan.plan_candidates(cfg, cands, progress=log)
    log(plan.format_table(result))
    rows = result["rows"]
    for shells in sorted(CUTOFF_SHELLS, reverse=True):
        fits = [(r, c) for r, c in zip(rows, cands) if -c.cutoff == shells and not r["cutoff_exceeds_supercell"]]
        if fits:
            row, cand = min(fits, key=lambda rc: rc[0]["relative_cost"])
            reason = (f"kappaflow init chose sow.supercell {row['supercell']} with {shells} neighbour shells "
                      f"({row['pair_cutoff_ang']:.2f} Å, within half the shortest image distance "
                      f"{row['max_safe_cutoff_ang']:.2f} Å): the cheapest such candidate of its plan, "
                      f"{row['n_pw_runs']} pw.x runs of {row['n_atoms_supercell']} atoms")
            log(f"init: {reason}")
            return {"supercell": list(cand.supercell), "neighbour_shells": shells, "reason": reason,
                    "plan_rows": rows}
    row = max(rows, key=lambda r: r["max_safe_cutoff_ang"])
    raise KappaflowError(f"{system_file}: no candidate supercell holds even {min(CUTOFF_SHELLS)} neighbour shells "
                         f"(the largest, {row['supercell']}, holds {row['max_safe_cutoff_ang']:.2f} Å); choose "
                         "sow.supercell and the cutoff by hand (kappaflow plan)")
