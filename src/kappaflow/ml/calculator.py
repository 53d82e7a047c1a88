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
holds for displaced copies of the sow's supercell only.

``stress`` (eV/Å³, ASE's Voigt order and sign) is the committee mean's, by the strain trick (every pair
vector strained by 1 + ε, σ = (1/V) ∂E/∂ε; :func:`kappaflow.gk.heatflux.energy_forces_stress`), computed
only when asked for, so ASE's cell filters can run an ML vc-relax; with a baseline it is not available
(the baseline is an expansion about one supercell and has no stress).
"""

from __future__ import annotations

import os

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from kappaflow.ml.gvectors import MBPParameters, descriptors_for_atoms

__all__ = ["CommitteeCalculator"]


class CommitteeCalculator(Calculator):
    implemented_properties = ["energy", "forces", "free_energy", "stress"]

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
        self._atomic_model = None

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
        if "stress" in properties:
            self.results["stress"] = self._stress()

    def _stress(self) -> np.ndarray:
        from kappaflow.gk.committee_tf import CommitteeAtomicEnergies
        from kappaflow.gk.heatflux import energy_forces_stress

        if self.baseline is not None:
            raise PropertyNotImplementedError("CommitteeCalculator: no stress with a Δ-learning baseline (it is an "
                                              "expansion about one supercell)")
        if not all(self.atoms.pbc):
            raise PropertyNotImplementedError("CommitteeCalculator: stress needs a periodic cell in 3D")
        if self._atomic_model is None:
            self._atomic_model = CommitteeAtomicEnergies(self.committee)
        _, _, stress, _ = energy_forces_stress(self._atomic_model, self.atoms.positions, self.atoms.cell.array,
                                               self.atoms.get_chemical_symbols())
        return stress
