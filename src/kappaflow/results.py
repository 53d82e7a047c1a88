"""A results folder as pandas DataFrames, for notebooks: ``kappaflow.results.load("results/si")``.

>>> from kappaflow import results
>>> r = results.load("results/si")
>>> r.kappa.query("route == 'dft' and temperature_k == 300")     # κ of every route, tidy
>>> r.cost.wall_time_s.sum(), r.modes.head(), r.names()           # any table the run wrote

``kappa`` holds every κ table of the folder (the DFT route's ``bte/kappa.csv``, each ML model's, the
active-learning loop's final one), one row per (route, T), in W/(m·K) with tr/3; the other tables are
loaded as written (:mod:`kappaflow.tables`), and every ``*.provenance.json`` as a dict.  docs/results_api.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kappaflow.errors import KappaflowError

__all__ = ["load", "Results", "TABLES"]

#: the tables by name: their path under results/<name>/
TABLES = {
    "cost": "dft/cost.csv",
    "plan": "plan/plan.csv",
    "sweep": "sweep/sweep_kappa.csv",
    "noise": "noise/noise_kappa.csv",
    "scaling": "scaling/scaling.csv",
    "stability_dos": "stability/dos.csv",
    "modes": "analysis/modes.csv",
    "cumulative_kappa": "analysis/cumulative_kappa.csv",
    "branches": "analysis/branches.csv",
    "ablation": "ml/ablation/kappa_ablation.csv",
    "al_rounds": "al/final/rounds.csv",
    "al_heldout": "al/final/heldout.csv",
    "gk": "gk/kappa_gk.csv",
    "gk_bte_classical": "gk/bte_classical.csv",
    "gk_size": "gk/size/kappa_vs_cell.csv",
}

_COMPONENTS = ["xx", "yy", "zz", "yz", "xz", "xy"]


@dataclass
class Results:
    """The tables of one results folder (``results/<name>``)."""

    path: Path
    kappa: object  # DataFrame: route, temperature_k, kappa_<ij>_w_per_mk, kappa_trace3_w_per_mk
    tables: dict = field(default_factory=dict)  # name -> DataFrame (TABLES, plus ml_<model>_analysis_*)
    provenance: dict = field(default_factory=dict)  # relative path of the κ table -> its provenance record

    def names(self) -> list[str]:
        return sorted(self.tables)

    def __getattr__(self, name):
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        known = ", ".join(sorted(tables)) or "none"
        raise AttributeError(f"{self.__dict__.get('path')}: no table {name!r} (loaded: {known})")

    def __repr__(self) -> str:
        routes = sorted(set(self.kappa["route"])) if len(self.kappa) else []
        return f"Results({self.path}: κ of {routes}; tables {self.names()})"


def _kappa_frame(path: Path, route: str):
    import numpy as np
    import pandas as pd

    from kappaflow.bte import read_kappa_csv

    k = read_kappa_csv(path)
    data = {"route": route, "temperature_k": k.temperatures_k}
    voigt = k.voigt()
    for n, c in enumerate(_COMPONENTS):
        data[f"kappa_{c}_w_per_mk"] = voigt[:, n]
    data["kappa_trace3_w_per_mk"] = np.trace(k.kappa_w_per_mk, axis1=1, axis2=2) / 3.0
    return pd.DataFrame(data)


def load(path) -> Results:
    """Every table of ``path`` (``results/<name>``) that exists; a folder with no κ table and no other
    table stops with the reason."""
    import pandas as pd

    from kappaflow.tables import read_table

    root = Path(path)
    if not root.is_dir():
        raise KappaflowError(f"{root}: no such results folder (expected results/<name>, e.g. results/si)")
    kappas, provenance = [], {}
    sources = [(root / "bte/kappa.csv", "dft"), (root / "al/final/bte/kappa.csv", "al")]
    sources += [(p, f"ml:{p.parent.parent.name}") for p in sorted((root / "ml").glob("*/bte/kappa.csv"))]
    for csv_path, route in sources:
        if csv_path.exists():
            kappas.append(_kappa_frame(csv_path, route))
            record = csv_path.with_name("kappa.provenance.json")
            if record.exists():
                provenance[str(csv_path.relative_to(root))] = json.loads(record.read_text())
    tables = {name: read_table(root / rel, what=name) for name, rel in TABLES.items() if (root / rel).exists()}
    for model_dir in sorted((root / "ml").glob("*/analysis")):
        for name in ("modes", "cumulative_kappa", "branches"):
            if (model_dir / f"{name}.csv").exists():
                tables[f"ml_{model_dir.parent.name}_{name}"] = read_table(model_dir / f"{name}.csv", what=name)
    if not kappas and not tables:
        raise KappaflowError(f"{root}: no κ table and no other table kappaflow writes (has the workflow run here?)")
    kappa = pd.concat(kappas, ignore_index=True) if kappas else pd.DataFrame(
        columns=["route", "temperature_k", *[f"kappa_{c}_w_per_mk" for c in _COMPONENTS], "kappa_trace3_w_per_mk"])
    return Results(path=root, kappa=kappa, tables=tables, provenance=provenance)
