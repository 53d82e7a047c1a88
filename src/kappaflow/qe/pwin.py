"""pw.x input files: a tolerant parser and a canonical, deterministic writer.

The parser accepts what users actually hand in: Fortran namelists with ``!`` comments, commas or newlines
between assignments, ``d`` exponents (``1d-010``), ``CELL_PARAMETERS`` in alat/bohr/angstrom (or with
``ibrav`` 1, 2, 3, 4, 6, 8 and ``celldm``/``A``), ``ATOMIC_POSITIONS`` in crystal/angstrom/bohr/alat with
optional ``if_pos`` flags (kept, written back: the vc-relax honours them; displaced supercells refuse
them, :meth:`PwInput.require_free_atoms`), and the seed thesis' ``cellldm(1)`` typo (read as ``celldm(1)``
with a warning).

The writer always emits ``ibrav = 0`` with ``CELL_PARAMETERS angstrom`` and ``ATOMIC_POSITIONS crystal``
at 15 decimals, namelist variables in the user's order with the user's spelling of values.  The same
structure and settings therefore always give byte-identical text, which is what the DFT result store
hashes.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from kappaflow import units
from kappaflow.errors import InputFileError

log = logging.getLogger(__name__)

NAMELIST_ORDER = ["control", "system", "electrons", "ions", "cell", "fcp", "rism"]
CARD_NAMES = {
    "atomic_species", "atomic_positions", "k_points", "cell_parameters", "occupations",
    "constraints", "atomic_velocities", "atomic_forces", "additional_k_points",
    "solvents", "hubbard",
}
#: misspellings seen in real inputs, read as the intended variable (with a warning)
KNOWN_TYPOS = {"cellldm": "celldm"}
#: variables that describe the lattice through ibrav; dropped when the writer emits CELL_PARAMETERS
LATTICE_VARIABLES = re.compile(r"^(celldm\(\d\)|a|b|c|cosab|cosac|cosbc)$")
PLACEHOLDERS = ("##NATOMS##", "##CELL##", "##COORDINATES##")
#: Atoms array of pw.x's if_pos flags (n, 3) of 0/1, present only when some coordinate is fixed
IF_POS = "qe_if_pos"


@dataclass
class Species:
    symbol: str
    mass_amu: float
    pseudopotential: str


@dataclass
class PwInput:
    """A parsed pw.x input: namelists (raw value strings), species, structure and the other cards."""

    namelists: "OrderedDict[str, OrderedDict[str, str]]"
    species: list[Species]
    atoms: Atoms
    k_points: str
    other_cards: list[str] = field(default_factory=list)
    path: str = "<string>"
    position_lines: list[int] = field(default_factory=list)  # 1-based line of each ATOMIC_POSITIONS row

    # -- typed access to namelist values ---------------------------------------------------------
    def get(self, namelist: str, key: str, default=None):
        value = self.namelists.get(namelist.lower(), {}).get(key.lower())
        return default if value is None else parse_fortran_value(value)

    def set(self, namelist: str, key: str, value) -> None:
        nl = self.namelists.setdefault(namelist.lower(), OrderedDict())
        nl[key.lower()] = format_fortran_value(value)

    def remove(self, namelist: str, key: str) -> None:
        self.namelists.get(namelist.lower(), {}).pop(key.lower(), None)

    @property
    def calculation(self) -> str:
        return str(self.get("control", "calculation", "scf"))

    def pseudopotential_paths(self) -> dict[str, Path]:
        pseudo_dir = Path(str(self.get("control", "pseudo_dir", ".")))
        return {sp.symbol: pseudo_dir / sp.pseudopotential for sp in self.species}

    def with_structure(self, atoms: Atoms) -> "PwInput":
        """A copy carrying another structure (same species table, settings and cards)."""
        known = {sp.symbol for sp in self.species}
        unknown = sorted(set(atoms.get_chemical_symbols()) - known)
        if unknown:
            raise InputFileError(self.path, f"structure has species {unknown} missing from ATOMIC_SPECIES")
        namelists = OrderedDict((k, OrderedDict(v)) for k, v in self.namelists.items())
        return PwInput(namelists, list(self.species), atoms.copy(), self.k_points,
                       list(self.other_cards), self.path)

    def to_text(self) -> str:
        return write_pw_input(self)

    def fixed_atoms(self) -> list[tuple[int, list[int]]]:
        """(0-based atom, if_pos flags) of every atom with a fixed coordinate (an if_pos flag 0)."""
        if IF_POS not in self.atoms.arrays:
            return []
        return [(i, [int(v) for v in row]) for i, row in enumerate(self.atoms.arrays[IF_POS]) if not all(row)]

    def require_free_atoms(self, what: str) -> None:
        """Refuse fixed coordinates where every atom must move freely (displaced supercells: pw.x sets the
        forces of fixed coordinates to zero after printing them, in what it saves and uses)."""
        fixed = self.fixed_atoms()
        if fixed:
            i, flags = fixed[0]
            line = self.position_lines[i] if i < len(self.position_lines) else None
            label = str(self.atoms.arrays["qe_labels"][i])
            raise InputFileError(self.path, f"atom {i + 1} ({label}) has if_pos {' '.join(map(str, flags))} "
                                 f"({len(fixed)} atom(s) with fixed coordinates): {what} needs every atom free, "
                                 "since pw.x zeroes the force on a fixed coordinate and the force constants "
                                 "would be wrong; remove the if_pos flags", line)


# ------------------------------------------------------------------------------------------------
# Fortran values
# ------------------------------------------------------------------------------------------------
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$")


def parse_fortran_value(raw: str):
    """'scf' -> str, .true. -> bool, 1d-010 -> float, 4 -> int."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in (".true.", ".t.", "true", "t"):
        return True
    if low in (".false.", ".f.", "false", "f"):
        return False
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(re.sub(r"[dD]", "e", text))
    return text


def format_fortran_value(value) -> str:
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)).replace("e", "d")
    return "'" + str(value) + "'"


def _parse_float(token: str, path: str, lineno: int, what: str) -> float:
    try:
        return float(re.sub(r"[dD]", "e", token))
    except ValueError:
        raise InputFileError(path, f"expected a number for {what}, found {token!r}", lineno) from None


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------
def _strip_comment(line: str) -> str:
    out, quote = [], None
    for ch in line:
        if quote:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch in "!#":
            break
        else:
            out.append(ch)
    return "".join(out).rstrip()


def _split_assignments(text: str) -> list[str]:
    """Split 'a = 1, b = 'x,y'' on commas outside quotes."""
    parts, cur, quote = [], [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def read_pw_input(path) -> PwInput:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputFileError(path, f"cannot read pw.x input ({exc.strerror})") from None
    return parse_pw_input(text, str(path))


def parse_pw_input(text: str, path: str = "<string>") -> PwInput:
    for ph in PLACEHOLDERS:
        if ph in text:
            raise InputFileError(path, f"contains the template placeholder {ph}; this is a supercell "
                                 "template, not a pw.x input")
    lines = text.splitlines()
    namelists: OrderedDict[str, OrderedDict[str, str]] = OrderedDict()
    cards: list[tuple[str, str, list[tuple[int, str]], int]] = []  # (name, option, body lines, lineno)
    current_nl = None
    current_card = None
    for lineno, raw in enumerate(lines, start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if current_nl is not None:
            if line == "/" or line.lower() == "&end":
                current_nl = None
                continue
            word = re.split(r"[\s({]", line, maxsplit=1)[0].lower()
            if word in CARD_NAMES or line.startswith("&"):
                raise InputFileError(path, f"namelist &{current_nl.upper()} is not closed with '/' "
                                     f"before {line.split()[0]}", lineno)
            ends = line.endswith("/") and not line.endswith("'/") and "=" in line
            body = line[:-1] if ends else line
            for assignment in _split_assignments(body):
                if "=" not in assignment:
                    raise InputFileError(path, f"expected 'name = value' in &{current_nl.upper()}, "
                                         f"found {assignment!r}", lineno)
                key, value = (s.strip() for s in assignment.split("=", 1))
                key = key.lower().replace(" ", "")
                base = key.split("(")[0]
                if base in KNOWN_TYPOS:
                    fixed = KNOWN_TYPOS[base] + key[len(base):]
                    log.warning("%s:%d: '%s' is not a pw.x variable; reading it as '%s'",
                                path, lineno, key, fixed)
                    key = fixed
                if not value:
                    raise InputFileError(path, f"no value for {key!r}", lineno)
                namelists[current_nl][key] = value
            if ends:
                current_nl = None
            continue
        if line.startswith("&"):
            name = line[1:].split()[0].lower()
            if name not in NAMELIST_ORDER:
                raise InputFileError(path, f"unknown namelist &{name.upper()}", lineno)
            current_nl = name
            current_card = None
            namelists.setdefault(name, OrderedDict())
            rest = line[1 + len(name):].strip()
            if rest:
                raise InputFileError(path, f"put the assignments of &{name.upper()} on their own lines",
                                     lineno)
            continue
        word = re.split(r"[\s({]", line, maxsplit=1)[0].lower()
        if word in CARD_NAMES:
            option = line[len(word):].strip().strip("(){}").strip().lower()
            current_card = (word, option, [], lineno)
            cards.append(current_card)
            continue
        if current_card is None:
            raise InputFileError(path, f"unexpected line outside any namelist or card: {line!r}", lineno)
        current_card[2].append((lineno, line))
    if current_nl is not None:
        raise InputFileError(path, f"namelist &{current_nl.upper()} is not closed with '/'")
    for required in ("control", "system"):
        if required not in namelists:
            raise InputFileError(path, f"missing namelist &{required.upper()}")
    return _build_input(namelists, cards, path)


def pseudopotential_files(text: str, path: str = "<string>") -> tuple[str | None, dict[str, str]]:
    """``(pseudo_dir or None, {species label: pseudopotential file name})`` of a pw.x input, read from
    &CONTROL and ATOMIC_SPECIES only (cheap: the store key asks for it for every supercell)."""
    pseudo_dir = None
    files: dict[str, str] = {}
    namelist = None
    in_species = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if namelist is not None:
            if line == "/" or line.lower() == "&end":
                namelist = None
                continue
            if namelist == "control":
                for assignment in _split_assignments(line.rstrip("/")):
                    key, _, value = assignment.partition("=")
                    if key.strip().lower() == "pseudo_dir":
                        pseudo_dir = str(parse_fortran_value(value))
            if line.endswith("/") and "=" in line and not line.endswith("'/"):
                namelist = None
            continue
        if line.startswith("&"):
            namelist = line[1:].split()[0].lower()
            in_species = False
            continue
        word = re.split(r"[\s({]", line, maxsplit=1)[0].lower()
        if word in CARD_NAMES:
            in_species = word == "atomic_species"
            continue
        if in_species:
            fields = line.split()
            if len(fields) != 3:
                raise InputFileError(path, f"ATOMIC_SPECIES line needs 'symbol mass pseudo', found {line!r}",
                                     lineno)
            files[fields[0]] = fields[2]
    if not files:
        raise InputFileError(path, "missing card ATOMIC_SPECIES")
    return pseudo_dir, files


def _build_input(namelists, cards, path) -> PwInput:
    card = {name: (option, body, lineno) for name, option, body, lineno in cards}
    system = namelists["system"]

    def sysval(key, default=None):
        return parse_fortran_value(system[key]) if key in system else default

    nat = sysval("nat")
    ntyp = sysval("ntyp")
    if not isinstance(nat, int) or nat <= 0:
        raise InputFileError(path, f"&SYSTEM nat must be a positive integer, found {system.get('nat')!r}")
    if not isinstance(ntyp, int) or ntyp <= 0:
        raise InputFileError(path, f"&SYSTEM ntyp must be a positive integer, found {system.get('ntyp')!r}")

    # species
    if "atomic_species" not in card:
        raise InputFileError(path, "missing card ATOMIC_SPECIES")
    species = []
    for lineno, line in card["atomic_species"][1]:
        fields = line.split()
        if len(fields) != 3:
            raise InputFileError(path, f"ATOMIC_SPECIES line needs 'symbol mass pseudo', found {line!r}",
                                 lineno)
        species.append(Species(fields[0], _parse_float(fields[1], path, lineno, "a mass"), fields[2]))
    if len(species) != ntyp:
        raise InputFileError(path, f"ntyp = {ntyp} but ATOMIC_SPECIES lists {len(species)} species")

    # lattice
    alat_ang = None
    if "celldm(1)" in system:
        alat_ang = float(sysval("celldm(1)")) * units.BOHR_ANG
    elif "a" in system:
        alat_ang = float(sysval("a"))
    ibrav = sysval("ibrav", 0)
    if ibrav == 0:
        if "cell_parameters" not in card:
            raise InputFileError(path, "ibrav = 0 needs a CELL_PARAMETERS card")
        option, body, lineno = card["cell_parameters"]
        if len(body) != 3:
            raise InputFileError(path, f"CELL_PARAMETERS needs 3 lines, found {len(body)}", lineno)
        cell = np.array([[_parse_float(t, path, ln, "a cell vector component") for t in line.split()[:3]]
                         for ln, line in body], dtype=np.float64)
        if cell.shape != (3, 3):
            raise InputFileError(path, "CELL_PARAMETERS lines need 3 numbers each", lineno)
        if option in ("", "alat") and alat_ang is not None:
            cell = cell * alat_ang
        elif option == "alat":
            raise InputFileError(path, "CELL_PARAMETERS alat needs celldm(1) or A in &SYSTEM", lineno)
        elif option in ("bohr", ""):
            cell = cell * units.BOHR_ANG
        elif option != "angstrom":
            raise InputFileError(path, f"unknown CELL_PARAMETERS unit {option!r}", lineno)
    else:
        if alat_ang is None:
            raise InputFileError(path, f"ibrav = {ibrav} needs celldm(1) or A in &SYSTEM")
        cell = _ibrav_cell(ibrav, alat_ang, sysval, path)
    if abs(np.linalg.det(cell)) < 1e-8:
        raise InputFileError(path, "the cell vectors are linearly dependent (zero volume)")

    # positions
    if "atomic_positions" not in card:
        raise InputFileError(path, "missing card ATOMIC_POSITIONS")
    option, body, lineno = card["atomic_positions"]
    if len(body) != nat:
        raise InputFileError(path, f"nat = {nat} but ATOMIC_POSITIONS lists {len(body)} atoms", lineno)
    symbols, coords, if_pos, position_lines = [], [], [], []
    known = {sp.symbol for sp in species}
    for ln, line in body:
        fields = line.split()
        if len(fields) < 4:
            raise InputFileError(path, f"ATOMIC_POSITIONS line needs 'symbol x y z', found {line!r}", ln)
        if fields[0] not in known:
            raise InputFileError(path, f"species {fields[0]!r} is not in ATOMIC_SPECIES", ln)
        flags = [1, 1, 1]
        if len(fields) > 4:
            if len(fields) != 7 or any(f not in ("0", "1") for f in fields[4:7]):
                raise InputFileError(path, f"ATOMIC_POSITIONS: after 'symbol x y z' pw.x reads three if_pos "
                                     f"flags (0 or 1), found {fields[4:]}", ln)
            flags = [int(f) for f in fields[4:7]]
        symbols.append(fields[0])
        coords.append([_parse_float(t, path, ln, "a coordinate") for t in fields[1:4]])
        if_pos.append(flags)
        position_lines.append(ln)
    coords = np.array(coords, dtype=np.float64)
    option = option or "alat"
    if option == "crystal":
        positions = coords @ cell
    elif option == "angstrom":
        positions = coords
    elif option == "bohr":
        positions = coords * units.BOHR_ANG
    elif option == "alat":
        if alat_ang is None:
            alat_ang = float(np.linalg.norm(cell[0]))
        positions = coords * alat_ang
    else:
        raise InputFileError(path, f"unsupported ATOMIC_POSITIONS unit {option!r}", lineno)

    masses = {sp.symbol: sp.mass_amu for sp in species}
    atoms = Atoms(symbols=[_element(s) for s in symbols], positions=positions, cell=cell, pbc=True)
    atoms.set_masses([masses[s] for s in symbols])
    atoms.set_array("qe_labels", np.array(symbols, dtype=object))
    if not np.all(np.array(if_pos) == 1):  # kept (and written) only when some coordinate is fixed
        atoms.set_array(IF_POS, np.array(if_pos, dtype=np.int64))

    if "k_points" not in card:
        raise InputFileError(path, "missing card K_POINTS")
    option, body, _ = card["k_points"]
    k_points = "K_POINTS " + (option or "tpiba") + "".join("\n  " + line for _, line in body)

    other = []
    for name, (option, body, _) in card.items():
        if name in ("atomic_species", "cell_parameters", "atomic_positions", "k_points"):
            continue
        header = name.upper() + (f" {option}" if option else "")
        other.append(header + "".join("\n  " + line for _, line in body))
    return PwInput(namelists, species, atoms, k_points, other, path, position_lines)


def _element(label: str) -> str:
    """QE species labels may carry suffixes (Fe1, Si_a); the element is the leading letters."""
    match = re.match(r"[A-Z][a-z]?", label)
    if not match:
        raise ValueError(f"cannot read an element from species label {label!r}")
    return match.group(0)


def _ibrav_cell(ibrav, a, sysval, path):
    """The cell (Å, rows) of pw.x's Bravais lattice ``ibrav`` with lattice parameter ``a`` (Å)."""
    if ibrav == 1:
        return a * np.eye(3)
    if ibrav == 2:
        return a / 2 * np.array([[-1, 0, 1], [0, 1, 1], [-1, 1, 0]], dtype=np.float64)
    if ibrav == 3:
        return a / 2 * np.array([[1, 1, 1], [-1, 1, 1], [-1, -1, 1]], dtype=np.float64)
    if ibrav == 4:
        c_over_a = _axis_ratio(sysval, a, ibrav, path, 3, "c")
        return a * np.array([[1, 0, 0], [-0.5, math.sqrt(3) / 2, 0], [0, 0, c_over_a]], dtype=np.float64)
    if ibrav == 6:
        return a * np.diag([1.0, 1.0, _axis_ratio(sysval, a, ibrav, path, 3, "c")])
    if ibrav == 8:
        b_over_a = _axis_ratio(sysval, a, ibrav, path, 2, "b")
        return a * np.diag([1.0, b_over_a, _axis_ratio(sysval, a, ibrav, path, 3, "c")])
    raise InputFileError(path, f"ibrav = {ibrav} is not supported; write the cell as ibrav = 0 with "
                         "CELL_PARAMETERS")


def _axis_ratio(sysval, a, ibrav, path, celldm_index: int, length: str) -> float:
    """b/a (celldm(2), or B/A) or c/a (celldm(3), or C/A) of an ibrav lattice: given and positive, or an
    error naming the variable (pw.x needs it; a silent default would build a NaN or a wrong cell)."""
    celldm = f"celldm({celldm_index})"
    ratio = sysval(celldm, None)
    if ratio is None and isinstance(sysval(length, None), (int, float)):
        ratio = float(sysval(length)) / a  # B, C in Å
    if ratio is None:
        raise InputFileError(path, f"ibrav = {ibrav} needs {celldm} in &SYSTEM (or {length.upper()} with A): "
                             f"the {length}/a ratio of the lattice is missing")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not math.isfinite(ratio) or ratio <= 0:
        raise InputFileError(path, f"ibrav = {ibrav}: {celldm} (or {length.upper()}/A) must be a positive "
                             f"number, found {ratio!r}")
    return float(ratio)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _labels(atoms: Atoms) -> list[str]:
    if "qe_labels" in atoms.arrays:
        return [str(s) for s in atoms.arrays["qe_labels"]]
    return atoms.get_chemical_symbols()


def format_cell_card(atoms: Atoms) -> str:
    rows = "".join("\n  " + " ".join(f"{x:22.15f}" for x in vec) for vec in np.asarray(atoms.cell))
    return "CELL_PARAMETERS angstrom" + rows


def format_positions_card(atoms: Atoms) -> str:
    """ATOMIC_POSITIONS crystal at 15 decimals, with pw.x's if_pos flags when some coordinate is fixed."""
    frac = atoms.get_scaled_positions(wrap=False)
    flags = atoms.arrays.get(IF_POS)
    if flags is not None and np.all(flags == 1):
        flags = None
    rows = "".join(f"\n  {lab:4s}" + " ".join(f"{x:20.15f}" for x in row)
                   + ("" if flags is None else "  " + " ".join(str(int(v)) for v in flags[i]))
                   for i, (lab, row) in enumerate(zip(_labels(atoms), frac)))
    return "ATOMIC_POSITIONS crystal" + rows


def write_pw_input(pw: PwInput) -> str:
    out = []
    namelists = OrderedDict((k, OrderedDict(v)) for k, v in pw.namelists.items())
    system = namelists.setdefault("system", OrderedDict())
    for key in list(system):
        if LATTICE_VARIABLES.match(key):
            del system[key]
    system["ibrav"] = "0"
    system["nat"] = str(len(pw.atoms))
    system["ntyp"] = str(len(pw.species))
    calc = str(parse_fortran_value(namelists.get("control", {}).get("calculation", "'scf'")))
    if calc in ("relax", "md", "vc-relax", "vc-md"):
        namelists.setdefault("ions", OrderedDict())
    if calc in ("vc-relax", "vc-md"):
        namelists.setdefault("cell", OrderedDict())
    namelists.setdefault("electrons", OrderedDict())
    for name in NAMELIST_ORDER:
        if name not in namelists:
            continue
        out.append("&" + name.upper())
        for key, value in namelists[name].items():
            out.append(f"  {key} = {value}")
        out.append("/")
    out.append("ATOMIC_SPECIES")
    for sp in pw.species:
        out.append(f"  {sp.symbol} {sp.mass_amu!r} {sp.pseudopotential}")
    out.append(format_cell_card(pw.atoms))
    out.append(format_positions_card(pw.atoms))
    out.append(pw.k_points)
    out.extend(pw.other_cards)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------
# thirdorder-style supercell templates
# ------------------------------------------------------------------------------------------------
def check_template(text: str, path: str) -> None:
    missing = [ph for ph in PLACEHOLDERS if ph not in text]
    if missing:
        raise InputFileError(path, "supercell template lacks the placeholder(s) " + ", ".join(missing)
                             + " (thirdorder convention: ##NATOMS##, ##CELL##, ##COORDINATES##)")


def fill_template(text: str, atoms: Atoms, path: str = "<template>", number: str = "") -> str:
    """Substitute thirdorder's placeholders: ##NATOMS##, ##CELL## (CELL_PARAMETERS angstrom),
    ##COORDINATES## (ATOMIC_POSITIONS crystal) and ##NUMBER##."""
    check_template(text, path)
    return (text.replace("##NATOMS##", str(len(atoms)))
                .replace("##CELL##", format_cell_card(atoms))
                .replace("##COORDINATES##", format_positions_card(atoms))
                .replace("##NUMBER##", number))
