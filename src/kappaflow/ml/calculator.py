"""ASE calculator of a committee of network potentials (:class:`kappaflow.ml.model.Committee`).

``CommitteeCalculator(committee, params=None)`` computes the mBP descriptors (with derivatives, numpy,
:func:`kappaflow.ml.gvectors.compute_descriptors`) of the atoms at every call and gives

* ``energy`` = ``free_energy``: committee-mean energy (eV);
* ``forces``: committee-mean forces (eV/Å);
* ``forces_std`` (n, 3): population standard deviation of the members' forces, per atom and component;
* ``energy_std``: standard deviation of the members' energies (eV);
* ``members_forces`` (M, n, 3) and ``members_energy`` (M,).

A single :class:`~kappaflow.ml.model.NetworkPotential` is accepted as a one-member committee, and a list
of model directories is loaded with :meth:`Committee.load`.  With ``baseline`` (a
:class:`kappaflow.al.baseline.Baseline`, the active-learning loop's Δ-learning fit) the committee predicts
the residual and the calculator returns baseline + residual, as the loop's predictions do; the baseline
holds for displaced copies of the sow's supercell only.  Stress is not implemented.
"""

from __future__ import annotations

import os

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from kappaflow.ml.gvectors import MBPParameters, descriptors_for_atoms

__all__ = ["CommitteeCalculator"]


class CommitteeCalculator(Calculator):
    implemented_properties = ["energy", "forces", "free_energy"]

    def __init__(self, committee, params: MBPParameters | None = None, baseline=None, **kwargs):
        from kappaflow.ml.model import Committee, NetworkPotential

        if isinstance(committee, NetworkPotential):
            committee = Committee([committee])
        elif isinstance(committee, (list, tuple)) and committee and isinstance(committee[0], (str, os.PathLike)):
            committee = Committee.load(committee)
        elif isinstance(committee, (str, os.PathLike)):
            committee = Committee.load([committee])
        if not isinstance(committee, Committee):
            raise TypeError("CommitteeCalculator needs a Committee, a NetworkPotential or model directories")
        if params is not None and params != committee.params:
            raise ValueError("CommitteeCalculator: params differ from the descriptor parameters the "
                             "committee was trained with")
        super().__init__(**kwargs)
        self.committee = committee
        self.params = committee.params
        self.baseline = baseline

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        desc = descriptors_for_atoms(self.atoms, self.params, derivatives=True)
        pred = self.committee.predict(desc)
        if self.baseline is not None:
            pred = self.baseline.corrected(pred, self.atoms, "CommitteeCalculator structure")
        self.results = {
            "energy": pred["energy_ev"],
            "free_energy": pred["energy_ev"],
            "forces": np.array(pred["forces_ev_per_ang"]),
            "forces_std": np.array(pred["forces_std_ev_per_ang"]),
            "energy_std": pred["energy_std_ev"],
            "members_forces": np.array(pred["members_forces"]),
            "members_energy": np.array(pred["members_energy_ev"]),
        }
