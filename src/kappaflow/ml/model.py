"""PANNA-style atomic neural-network potentials: training, evaluation and committees.

Model
-----
One feed-forward network per species maps the mBP G-vector of an atom (:mod:`kappaflow.ml.gvectors`)
to an atomic energy; the structure energy is their sum and forces are its negative gradient through
the descriptor derivatives::

    x_i   = (G_i - mean_s) / std_s                          (identity unless ``standardize=True``)
    E_i   = offset_s + scale * NN_s(x_i)                    (NN_s: g -> hidden_layers -> 1, linear output)
    E     = sum_i E_i
    F_k   = -sum_{(i,k) pairs} sum_g dE/dG_ig dG_ig/dR_k    (stored sparse dG/dR, :class:`Descriptors`)

Per-species standardisation of G (mean/std over the training atoms) is available but off by default:
with mBP sets like the Si/GeS2 ones many components are Gaussian tails (1e-40 ... 1e-5) whose relative
variation is huge, and standardising blows them up into O(1) inputs that are exponentially sensitive
to distances.  On Stillinger–Weber Si (40 displaced + 50 MD cells) it made the force constants 10-100x
worse than raw G (fc2 20 % vs 2 % off, fc3 250 % vs 25 %), and on displaced cells only (std ~1e-3)
training did not converge at all.

The thesis network (seed thesis §5.3) has an input layer of 128 nodes (= g_size of its GeS2
descriptors), hidden layers of 64 and 32 nodes and one output: ``hidden_layers=(64, 32)``.  The thesis
does not name the activation; the default is PANNA's ``gaussian`` (exp(-x²), PANNA's activation code
1), which is smooth, as force constants from finite differences of forces need.  ``offset_s`` comes
from a least-squares fit of the training energies on the composition (PANNA's ``output_offset``) and
``scale`` is the RMS training force (eV/Å times 1 Å) so that the network's outputs start at O(1).

Loss (thesis eq. 5.5, λ = ``force_weight`` = 0.3)::

    L = energy_weight * mean_structures[(ΔE / n_atoms)²]  +  force_weight * mean_components[ΔF²]

in eV and eV/Å (``energy_loss="total"`` uses ΔE² of total energies instead, as PANNA does).
Optimiser: Adam (float64, implemented here), learning rate ``learning_rate`` decaying exponentially to
``learning_rate_final`` at the last epoch (constant when None), mini-batches of ``batch_size``
structures reshuffled every epoch.

Measured on Stillinger–Weber Si (2x2x2 supercell of the primitive cell, 16 atoms: 39 phono3py
pair-displaced cells at 0.01 Å with a 4 Å pair cutoff + 50 Langevin MD snapshots at 500 K; κ(300 K)
from phono3py RTA on an 11³ mesh with the ML forces of the 39 displaced cells):

=====================================  ==========  =========  ========  ========  =========
setup (one member, 100 % training)      F(disp)     F(MD test)  fc2 err   fc3 err   κ err
=====================================  ==========  =========  ========  ========  =========
set A G, thesis settings, 1000 ep.      0.78 meV/Å  —          1.8 %     25 %      -39 %
set A, standardize=True, 1000 ep.       8.8         —          20 %      260 %     -97 %
set A, lr 3e-3→1e-5, λ/ew = 10, 3000    0.16-0.24   7.5-8.0    0.4-0.5 % 6-7 %     -1..+8 %
eta_ang 6, zeta 8, Rc_ang 4.0, same     0.082       2.9        0.19 %    2.7 %     -2 %
  (same, 1500 epochs)                   0.087       3.6        0.20 %    3.6 %     -5 %
  (same, thesis lr/λ/energy weight)     0.22        4.4        0.50 %    4.6 %     -3 %
=====================================  ==========  =========  ========  ========  =========

Random noise on the reference forces gives -32 % in κ at 0.1 meV/Å and -98 % at 1 meV/Å; the
network's errors are smooth, which is why 0.1-0.2 meV/Å suffices.

Everything is float64; training is deterministic for a given seed (weights initialised with numpy's
``default_rng(seed)``, batches shuffled with it, TensorFlow op determinism enabled).

Files written by :func:`train_model` in ``out_dir``
---------------------------------------------------
``metrics.csv``  one row per evaluated epoch (flushed each time): epoch, train/val energy RMSE per atom
                 (meV/atom), train/val force RMSE (meV/Å), learning rate, wall time (s).  Validation
                 columns are empty without a validation set.
``model.npz``    the weights with the lowest validation force RMSE so far (training force RMSE without
                 a validation set), with the full metadata as a JSON string (``metadata``).
``model.json``   the same metadata, human readable: species, MBP parameters (``params.to_dict()``),
                 architecture, normalisation, energy offsets and scale, best epoch and its metrics,
                 seed, settings, ``complete`` (False while training runs), ``weights_sha256``.
Both model files are written to temporary siblings and renamed (npz first); a killed training
leaves the last best checkpoint, which loads.  :meth:`NetworkPotential.load` reads ``model.npz``
only (its embedded metadata is authoritative).

API
---
``NetworkSettings(hidden_layers=(64, 32), activation="gaussian")``
``TrainSettings(epochs=..., batch_size=20, learning_rate=1e-3, learning_rate_final=..., force_weight=0.3,
energy_weight=1.0, energy_loss="per_atom", validation_fraction=0.0, seed=0, network=NetworkSettings(),
...)``; both have ``to_dict()`` / ``from_dict()``.
``split_keys(keys, validation_fraction, seed) -> (train_keys, val_keys)``
``split_records(records, validation_fraction, seed) -> (train_records, val_records)``
``train_model(train_records, val_records, params, settings, out_dir, progress=None) -> dict``
``NetworkPotential.load(model_dir)``: ``energy_and_forces(desc)``, ``atomic_energies(desc)``,
``evaluate(desc)``.
``Committee(models)`` / ``Committee.load(dirs)``: ``predict(desc)``, ``predict_many(items)``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from kappaflow import atomic
from kappaflow.ml.gvectors import Descriptors, MBPParameters
from kappaflow.ml.ontheflytf import CommitteeEvaluator, committee_summary
from kappaflow.ml.tfimport import activation

__all__ = ["ACTIVATIONS", "NetworkSettings", "TrainSettings", "split_keys", "split_records",
           "train_model", "evaluate_records", "save_model", "NetworkPotential", "Committee", "MODEL_FORMAT"]

#: activations (all smooth): PANNA's gaussian exp(-x²), tanh, softplus log(1+e^x), silu x·sigmoid(x)
ACTIVATIONS = ("gaussian", "tanh", "softplus", "silu")
MODEL_FORMAT = "kappaflow-nnp-1"
MODEL_NPZ = "model.npz"
MODEL_JSON = "model.json"
METRICS_CSV = "metrics.csv"
METRICS_COLUMNS = ("epoch", "train_energy_rmse_mev_per_atom", "train_force_rmse_mev_per_ang",
                   "val_energy_rmse_mev_per_atom", "val_force_rmse_mev_per_ang", "learning_rate",
                   "wall_s")


def _import_tf():
    from kappaflow.ml.tfimport import import_tensorflow

    return import_tensorflow()


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------
def _from_dict(cls, mapping: Mapping, what: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    return cls(**mapping)


@dataclass(frozen=True)
class NetworkSettings:
    """Per-species network: ``g_size -> hidden_layers... -> 1`` with ``activation`` on hidden layers."""

    hidden_layers: tuple[int, ...] = (64, 32)
    activation: str = "gaussian"

    def __post_init__(self):
        layers = tuple(int(h) for h in self.hidden_layers)
        if not layers or any(h < 1 for h in layers):
            raise ValueError(f"hidden_layers must be positive sizes, got {self.hidden_layers!r}")
        object.__setattr__(self, "hidden_layers", layers)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    def to_dict(self) -> dict:
        return {"hidden_layers": list(self.hidden_layers), "activation": self.activation}

    @classmethod
    def from_dict(cls, mapping: Mapping) -> "NetworkSettings":
        return _from_dict(cls, mapping, "NetworkSettings")


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters (thesis defaults: batch 20, Adam lr 1e-3, λ = force_weight = 0.3).

    epochs: passes over the training set.
    learning_rate / learning_rate_final: exponential decay from the first to the last epoch
        (``learning_rate_final=None``: constant).
    energy_loss: ``"per_atom"`` (ΔE/n_atoms) or ``"total"`` (ΔE).
    validation_fraction: used by :func:`split_keys` / :func:`split_records` (0 = train on 100 %).
    standardize: per-species standardisation of G (mean/std of the training atoms; off by default,
        see the module docstring); feature stds below ``std_floor`` times the largest std of the
        species are raised to it.
    fit_offsets: per-species energy offsets from a least-squares fit on composition (else 0).
    eval_every: evaluate (and maybe checkpoint) every this many epochs (and at the last).
    progress_every: call ``progress`` every this many epochs.
    reshuffle_every: draw new mini-batches (a random partition of the training structures) every
        this many epochs; in between only the order of the batches is shuffled.  Batches are gathered
        into contiguous tensors when drawn, which for large cells (GeS2, 54 atoms, g = 128: 70 MB of
        dG/dR per batch of 20) costs several training steps, so values of ~10 speed training up
        several times there; 1 redraws every epoch.
    adam_beta1, adam_beta2, adam_epsilon: Adam constants.
    """

    epochs: int = 1000
    batch_size: int = 20
    learning_rate: float = 1e-3
    learning_rate_final: float | None = 1e-5
    force_weight: float = 0.3
    energy_weight: float = 1.0
    energy_loss: str = "per_atom"
    validation_fraction: float = 0.0
    seed: int = 0
    standardize: bool = False
    std_floor: float = 1e-3
    fit_offsets: bool = True
    eval_every: int = 1
    progress_every: int = 10
    reshuffle_every: int = 10
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    network: NetworkSettings = field(default_factory=NetworkSettings)

    def __post_init__(self):
        if isinstance(self.network, Mapping):
            object.__setattr__(self, "network", NetworkSettings.from_dict(self.network))
        for name in ("epochs", "batch_size", "eval_every", "progress_every", "reshuffle_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or int(v) < 1:
                raise ValueError(f"TrainSettings.{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not (self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.learning_rate_final is not None and not (self.learning_rate_final > 0):
            raise ValueError(f"learning_rate_final must be > 0 or None, got {self.learning_rate_final!r}")
        for name in ("force_weight", "energy_weight", "std_floor"):
            if not (getattr(self, name) >= 0):
                raise ValueError(f"TrainSettings.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.force_weight == 0 and self.energy_weight == 0:
            raise ValueError("force_weight and energy_weight are both 0")
        if self.energy_loss not in ("per_atom", "total"):
            raise ValueError(f"energy_loss must be 'per_atom' or 'total', got {self.energy_loss!r}")
        if not (0.0 <= self.validation_fraction < 1.0):
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        if self.learning_rate_final is None or self.epochs == 1:
            return float(self.learning_rate)
        frac = epoch / (self.epochs - 1)
        return float(self.learning_rate * (self.learning_rate_final / self.learning_rate) ** frac)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "network"}
        out["network"] = self.network.to_dict()
        return out

    @classmethod
    def from_dict(cls, mapping: Mapping) -> "TrainSettings":
        data = dict(mapping)
        if "network" in data and isinstance(data["network"], Mapping):
            data["network"] = NetworkSettings.from_dict(data["network"])
        return _from_dict(cls, data, "TrainSettings")


# ------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------
def split_keys(keys: Sequence[str], validation_fraction: float, seed: int = 0):
    """Deterministic split of ``keys`` into ``(train_keys, val_keys)``.

    The result depends only on the *set* of keys, the fraction and the seed (keys are sorted first);
    ``round(fraction * n)`` keys go to validation, at least one when the fraction is > 0 and there are
    two or more keys.  Both lists come back sorted.
    """
    keys = [str(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise ValueError("split_keys: duplicate keys")
    if not (0.0 <= validation_fraction < 1.0):
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    ordered = sorted(keys)
    n = len(ordered)
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = min(n_val, max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(ordered[i] for i in perm[:n_val])
    val_set = set(val)
    return [k for k in ordered if k not in val_set], val


def split_records(records: Sequence[dict], validation_fraction: float, seed: int = 0):
    """:func:`split_keys` applied to record dicts; returns ``(train_records, val_records)`` in
    the order of the split keys."""
    by_key = {r["key"]: r for r in records}
    if len(by_key) != len(records):
        raise ValueError("split_records: duplicate keys")
    train, val = split_keys(list(by_key), validation_fraction, seed)
    return [by_key[k] for k in train], [by_key[k] for k in val]


# ------------------------------------------------------------------------------------------------
# Numpy network evaluation (shared by NetworkPotential and Committee)
# ------------------------------------------------------------------------------------------------
def _act_np(name, z):
    """activation and its derivative."""
    if name == "gaussian":
        h = np.exp(-z * z)
        return h, -2.0 * z * h
    if name == "tanh":
        h = np.tanh(z)
        return h, 1.0 - h * h
    if name == "softplus":
        h = np.logaddexp(0.0, z)
        return h, 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "silu":
        s = 0.5 * (1.0 + np.tanh(0.5 * z))
        return z * s, s * (1.0 + z * (1.0 - s))
    raise ValueError(f"unknown activation {name!r}")


def _mlp_np(x, layers, activation, need_grad=True):
    """Batched over a leading member axis: x (M, n, g); layers [(W (M, i, o), b (M, o), W^T (M, o, i))].

    Returns out (M, n) and d out/dx (M, n, g) (None unless need_grad)."""
    h = x
    cache = []
    n_layers = len(layers)
    for l, (W, b, _) in enumerate(layers):
        z = np.matmul(h, W)
        z += b[:, None, :]
        if l < n_layers - 1:
            h, dh = _act_np(activation, z)
            cache.append(dh)
        else:
            h = z
    out = h[..., 0]
    if not need_grad:
        return out, None
    # backward: d out / d h_last = W_L[:, :, 0]
    grad = cache[-1] * layers[-1][0][:, None, :, 0]
    for l in range(n_layers - 2, -1, -1):
        if l < n_layers - 2:
            grad *= cache[l]
        grad = np.matmul(grad, layers[l][2])                   # (M, n, i)
    return out, grad


class _StackedNetworks:
    """Weights of M same-architecture models stacked along a member axis, for fast numpy evaluation."""

    def __init__(self, models: Sequence["NetworkPotential"]):
        first = models[0]
        self.species = first.species
        self.activation = first.activation
        self.n_members = len(models)
        self.layers = []          # per species: [(W (M,i,o), b (M,o))]
        for s in range(len(self.species)):
            per_layer = []
            for l in range(len(first.weights[s])):
                W = np.stack([m.weights[s][l][0] for m in models])
                per_layer.append((W, np.stack([m.weights[s][l][1] for m in models]),
                                  np.ascontiguousarray(np.swapaxes(W, 1, 2))))
            self.layers.append(per_layer)
        self.g_mean = np.stack([m.g_mean for m in models])      # (M, S, g)
        self.g_inv_std = 1.0 / np.stack([m.g_std for m in models])
        self.offsets = np.stack([m.energy_offsets for m in models])   # (M, S)
        self.scale = np.array([m.energy_scale for m in models])        # (M,)

    def atomic(self, G, species_index, need_grad=True):
        """Per-atom energies (M, n) and dE_i/dG_i (M, n, g)."""
        M = self.n_members
        n, g = G.shape
        E = np.empty((M, n))
        dE = np.empty((M, n, g)) if need_grad else None
        for s in range(len(self.species)):
            idx = np.flatnonzero(species_index == s)
            if idx.size == 0:
                continue
            x = G[idx][None, :, :] - self.g_mean[:, s, None, :]
            x *= self.g_inv_std[:, s, None, :]
            out, dout = _mlp_np(x, self.layers[s], self.activation, need_grad)
            E[:, idx] = self.offsets[:, s, None] + self.scale[:, None] * out
            if need_grad:
                dout *= self.scale[:, None, None] * self.g_inv_std[:, s, None, :]
                if idx.size == n:
                    dE = dout
                else:
                    dE[:, idx] = dout
        return E, dE


def _forces_from_dE(dE_dG, pairs, values, n_atoms):
    """Forces (M, n, 3) from dE/dG (M, n, g) and sparse derivative rows."""
    M = dE_dG.shape[0]
    per_pair = np.einsum("mpg,pgc->mpc", dE_dG[:, pairs[:, 0]], values, optimize=True)
    forces = np.zeros((M, n_atoms, 3))
    for m in range(M):
        np.add.at(forces[m], pairs[:, 1], per_pair[m])
    return -forces


# ------------------------------------------------------------------------------------------------
# NetworkPotential
# ------------------------------------------------------------------------------------------------
class NetworkPotential:
    """A trained model: per-species networks, normalisation and energy offsets (numpy, float64)."""

    def __init__(self, params: MBPParameters, network: NetworkSettings, weights, g_mean, g_std,
                 energy_offsets, energy_scale: float, metadata: dict | None = None):
        self.params = params
        self.network = network
        self.species = tuple(params.species)
        self.activation = network.activation
        self.weights = [[(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in sp]
                        for sp in weights]
        self.g_mean = np.asarray(g_mean, np.float64)
        self.g_std = np.asarray(g_std, np.float64)
        self.energy_offsets = np.asarray(energy_offsets, np.float64)
        self.energy_scale = float(energy_scale)
        self.metadata = dict(metadata or {})
        S, g = len(self.species), params.g_size
        if self.g_mean.shape != (S, g) or self.g_std.shape != (S, g) or self.energy_offsets.shape != (S,):
            raise ValueError("NetworkPotential: normalisation/offset shapes do not fit the species and g_size")
        sizes = (g,) + network.hidden_layers + (1,)
        for s, sp in enumerate(self.weights):
            if len(sp) != len(sizes) - 1:
                raise ValueError(f"NetworkPotential: species {self.species[s]} has {len(sp)} layers, "
                                 f"expected {len(sizes) - 1}")
            for l, (W, b) in enumerate(sp):
                if W.shape != (sizes[l], sizes[l + 1]) or b.shape != (sizes[l + 1],):
                    raise ValueError(f"NetworkPotential: species {self.species[s]} layer {l} has shape "
                                     f"{W.shape}, expected {(sizes[l], sizes[l + 1])}")
        self._stack = _StackedNetworks([self])

    # -- files -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir) -> "NetworkPotential":
        """Load ``model_dir/model.npz`` (or the npz path itself)."""
        path = Path(model_dir)
        if path.is_dir():
            path = path / MODEL_NPZ
        if not path.is_file():
            raise FileNotFoundError(f"no trained model at {path}")
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["metadata"]))
            if meta.get("format") != MODEL_FORMAT:
                raise ValueError(f"{path}: not a {MODEL_FORMAT} model (format {meta.get('format')!r})")
            params = MBPParameters.from_dict(meta["descriptor"])
            network = NetworkSettings.from_dict(meta["architecture"]["network"])
            n_layers = len(network.hidden_layers) + 1
            weights = [[(data[f"{sp}/W{l}"], data[f"{sp}/b{l}"]) for l in range(n_layers)]
                       for sp in params.species]
            g_mean = data["g_mean"]
            g_std = data["g_std"]
            offsets = data["energy_offsets"]
        return cls(params, network, weights, g_mean, g_std, offsets, meta["energy_scale_ev"], meta)

    def arrays(self) -> dict:
        """The arrays stored in model.npz (without the metadata)."""
        out = {"g_mean": self.g_mean, "g_std": self.g_std, "energy_offsets": self.energy_offsets}
        for sp, layers in zip(self.species, self.weights):
            for l, (W, b) in enumerate(layers):
                out[f"{sp}/W{l}"] = W
                out[f"{sp}/b{l}"] = b
        return out

    # -- evaluation ----------------------------------------------------------------------------------
    def _check(self, desc: Descriptors):
        if desc.params != self.params:
            raise ValueError("descriptors were computed with other MBP parameters than the model's")

    def atomic_energies(self, desc: Descriptors) -> np.ndarray:
        """Per-atom energies (eV), shape (n_atoms,)."""
        self._check(desc)
        E, _ = self._stack.atomic(desc.G, desc.species_index, need_grad=False)
        return E[0]

    def energy_and_forces(self, desc: Descriptors):
        """``(energy_eV, forces (n, 3) eV/Å)``; ``desc`` needs derivatives."""
        out = self.evaluate(desc)
        return out["energy_ev"], out["forces_ev_per_ang"]

    def evaluate(self, desc: Descriptors) -> dict:
        """``energy_ev``, ``forces_ev_per_ang`` (n, 3) and ``atomic_energies_ev`` (n,)."""
        self._check(desc)
        if not desc.has_derivatives:
            raise ValueError("forces need descriptors with derivatives")
        E, dE = self._stack.atomic(desc.G, desc.species_index)
        F = _forces_from_dE(dE, desc.dG_pairs, desc.dG_values, desc.n_atoms)
        return {"energy_ev": float(E[0].sum()), "forces_ev_per_ang": F[0], "atomic_energies_ev": E[0]}


# ------------------------------------------------------------------------------------------------
# Committee
# ------------------------------------------------------------------------------------------------
class Committee:
    """Several :class:`NetworkPotential` on the same descriptors; mean and spread of their predictions.

    Standard deviations are population standard deviations over the members (``ddof=0``), so a
    committee of identical members has exactly zero spread.
    """

    def __init__(self, models: Sequence[NetworkPotential]):
        models = list(models)
        if not models:
            raise ValueError("Committee: no models")
        first = models[0]
        for m in models[1:]:
            if m.params != first.params:
                raise ValueError("Committee: members use different descriptor parameters")
            if m.network != first.network:
                raise ValueError("Committee: members have different architectures")
        self.models = models
        self.params = first.params
        self.species = first.species
        self._stack = _StackedNetworks(models)
        self._otf = None

    @classmethod
    def load(cls, model_dirs: Iterable) -> "Committee":
        return cls([NetworkPotential.load(d) for d in model_dirs])

    @property
    def n_members(self) -> int:
        return len(self.models)

    def predict(self, desc: Descriptors) -> dict:
        """Committee prediction for one structure (descriptors with derivatives):
        ``energy_ev``, ``energy_std_ev``, ``forces_ev_per_ang`` (n, 3, mean over members),
        ``forces_std_ev_per_ang`` (n, 3), ``members_energy_ev`` (M,), ``members_forces`` (M, n, 3)."""
        if desc.params != self.params:
            raise ValueError("descriptors were computed with other MBP parameters than the committee's")
        if not desc.has_derivatives:
            raise ValueError("forces need descriptors with derivatives")
        E, dE = self._stack.atomic(desc.G, desc.species_index)
        F = _forces_from_dE(dE, desc.dG_pairs, desc.dG_values, desc.n_atoms)
        return committee_summary(E.sum(axis=1), F)

    def predict_many(self, items: Sequence, batch_atoms: int = 4000) -> list[dict]:
        """Predictions (as :meth:`predict`) for many structures.

        ``items`` are all :class:`Descriptors` (with derivatives; evaluated with numpy, all structures
        in one network pass) or all ``ase.Atoms`` (descriptors and forces computed on the fly in
        TensorFlow, :mod:`kappaflow.ml.ontheflytf`, in batches of about ``batch_atoms`` atoms).  The
        ``ase.Atoms`` route is the fast one: it never builds the stored dG/dR, whose computation
        dominates the Descriptors route (212 GeS2 cells of 54 atoms: ~3 s for the derivatives alone,
        against ~1 s in total on the fly for a 5-member committee on 2 cores).
        """
        items = list(items)
        if not items:
            return []
        if all(isinstance(x, Descriptors) for x in items):
            return self._predict_many_desc(items)
        from ase import Atoms
        if all(isinstance(x, Atoms) for x in items):
            if self._otf is None:
                self._otf = CommitteeEvaluator(self)
            return self._otf.predict_many(items, batch_atoms=batch_atoms)
        raise TypeError("predict_many: give a list of Descriptors or a list of ase.Atoms")

    def _predict_many_desc(self, descs) -> list[dict]:
        for d in descs:
            if d.params != self.params:
                raise ValueError("descriptors were computed with other MBP parameters than the committee's")
            if not d.has_derivatives:
                raise ValueError("forces need descriptors with derivatives")
        n = np.array([d.n_atoms for d in descs])
        start = np.concatenate([[0], np.cumsum(n)])
        G = np.concatenate([d.G for d in descs])
        sp = np.concatenate([d.species_index for d in descs])
        E, dE = self._stack.atomic(G, sp)
        out = []
        for s, d in enumerate(descs):
            a, b = start[s], start[s + 1]
            F = _forces_from_dE(dE[:, a:b], d.dG_pairs, d.dG_values, d.n_atoms)
            out.append(committee_summary(E[:, a:b].sum(axis=1), F))
        return out


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def save_model(model: NetworkPotential, out_dir) -> Path:
    """Write ``model.npz`` then ``model.json`` atomically into ``out_dir``; returns the npz path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = model.arrays()
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name], "<f8").tobytes())
    meta = dict(model.metadata)
    meta["weights_sha256"] = h.hexdigest()
    text = json.dumps(meta, indent=1, allow_nan=False)
    buf = io.BytesIO()
    np.savez(buf, metadata=np.array(text), **arrays)
    atomic.write_bytes(out_dir / MODEL_NPZ, buf.getvalue())
    atomic.write_bytes(out_dir / MODEL_JSON, (text + "\n").encode())
    model.metadata = meta
    return out_dir / MODEL_NPZ


@dataclass
class _Data:
    """Training/validation structures concatenated (numpy) with per-structure ranges."""

    n_structures: int
    G: np.ndarray
    species: np.ndarray
    forces: np.ndarray
    pair_i: np.ndarray        # global atom indices
    pair_k: np.ndarray
    dG: np.ndarray
    energy: np.ndarray
    n_atoms: np.ndarray
    weight: np.ndarray        # (S,) loss weight per structure
    atom_start: np.ndarray    # (S+1,)
    pair_start: np.ndarray    # (S+1,)
    counts: np.ndarray        # (S, n_species)


def _pack(records, params: MBPParameters) -> _Data | None:
    if not records:
        return None
    G, sp, F, pi, pk, dG, E, n, npairs, wts = [], [], [], [], [], [], [], [], [], []
    offset = 0
    S = params.n_species
    counts = np.zeros((len(records), S))
    keys = set()
    for r, rec in enumerate(records):
        key = rec["key"]
        if key in keys:
            raise ValueError(f"duplicate record key {key!r}")
        keys.add(key)
        g = np.asarray(rec["G"], np.float64)
        if g.ndim != 2 or g.shape[1] != params.g_size:
            raise ValueError(f"record {key!r}: G has shape {g.shape}, the descriptor set gives g_size "
                             f"{params.g_size}")
        species = params.species_indices(rec["symbols"])
        if not np.array_equal(species, np.asarray(rec["species_index"])):
            raise ValueError(f"record {key!r}: species_index does not match its symbols in the species "
                             f"order {list(params.species)}")
        nat = g.shape[0]
        pairs = np.asarray(rec["dG_pairs"], np.int64)
        G.append(g)
        sp.append(species)
        F.append(np.asarray(rec["forces_ev_per_ang"], np.float64).reshape(nat, 3))
        pi.append(pairs[:, 0] + offset)
        pk.append(pairs[:, 1] + offset)
        dG.append(np.asarray(rec["dG_values"], np.float64))
        E.append(float(rec["energy_ev"]))
        w = float(rec.get("loss_weight", 1.0))
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"record {key!r}: loss_weight must be finite and >= 0, got {w!r}")
        wts.append(w)
        n.append(nat)
        npairs.append(pairs.shape[0])
        counts[r] = np.bincount(species, minlength=S)
        offset += nat
    n = np.array(n, np.int64)
    npairs = np.array(npairs, np.int64)
    return _Data(len(records), np.concatenate(G), np.concatenate(sp).astype(np.int64), np.concatenate(F),
                 np.concatenate(pi), np.concatenate(pk), np.concatenate(dG), np.array(E), n, np.array(wts),
                 np.concatenate([[0], np.cumsum(n)]), np.concatenate([[0], np.cumsum(npairs)]), counts)


def _batch_indices(data: _Data, structs: np.ndarray):
    """Atom/pair gather indices and batch-local pair/segment indices for structures ``structs``."""
    structs = np.asarray(structs, np.int64)
    a0 = data.atom_start[structs]
    nat = data.n_atoms[structs]
    p0 = data.pair_start[structs]
    npair = data.pair_start[structs + 1] - p0
    local_atom = np.cumsum(nat) - nat
    local_pair = np.cumsum(npair) - npair
    atom_idx = np.repeat(a0 - local_atom, nat) + np.arange(nat.sum())
    pair_idx = np.repeat(p0 - local_pair, npair) + np.arange(npair.sum())
    shift = np.repeat(local_atom - a0, npair)
    pair_i = data.pair_i[pair_idx] + shift
    pair_k = data.pair_k[pair_idx] + shift
    seg = np.repeat(np.arange(structs.size), nat)
    return atom_idx, pair_idx, pair_i, pair_k, seg


def _normalisation(data: _Data, S: int, g: int, settings: TrainSettings):
    mean = np.zeros((S, g))
    std = np.ones((S, g))
    if not settings.standardize:
        return mean, std
    for s in range(S):
        Gs = data.G[data.species == s]
        if Gs.shape[0] == 0:
            continue
        mean[s] = Gs.mean(axis=0)
        sd = Gs.std(axis=0)
        floor = max(settings.std_floor * sd.max(), 1e-12)
        std[s] = np.maximum(sd, floor)
    return mean, std


def _energy_offsets(data: _Data, S: int, settings: TrainSettings):
    if not settings.fit_offsets:
        return np.zeros(S)
    present = data.counts.sum(axis=0) > 0
    offsets = np.zeros(S)
    sol, *_ = np.linalg.lstsq(data.counts[:, present], data.energy, rcond=None)
    offsets[present] = sol
    return offsets


def _init_weights(rng, sizes, S):
    """Glorot-uniform weights, zero biases, per species."""
    weights = []
    for _ in range(S):
        layers = []
        for i, o in zip(sizes[:-1], sizes[1:]):
            lim = math.sqrt(6.0 / (i + o))
            layers.append((rng.uniform(-lim, lim, size=(i, o)), np.zeros(o)))
        weights.append(layers)
    return weights


class _TFNetwork:
    """The per-species networks as float64 TensorFlow variables, and the force/energy graph used both
    by the training loop and by :func:`evaluate_records`."""

    def __init__(self, tf, params: MBPParameters, network: NetworkSettings, weights, g_mean, g_std,
                 offsets, scale):
        f64 = tf.float64
        self.tf = tf
        self.params = params
        self.network = network
        self.S = params.n_species
        self.g = params.g_size
        self.variables = [[(tf.Variable(W, dtype=f64), tf.Variable(b, dtype=f64)) for W, b in layers]
                          for layers in weights]
        self.flat_variables = [v for layers in self.variables for Wb in layers for v in Wb]
        self.g_mean = tf.constant(g_mean, f64)
        self.g_inv_std = tf.constant(1.0 / np.asarray(g_std), f64)
        self.offsets = tf.constant(offsets, f64)
        self.scale = tf.constant(scale, f64)
        self.act = activation(tf, network.activation)
        self.n_layers = len(network.hidden_layers) + 1
        i64 = tf.int64
        self.signature = [tf.TensorSpec([None, self.g], f64), tf.TensorSpec([None], tf.int32),
                          tf.TensorSpec([None, self.g, 3], f64), tf.TensorSpec([None], i64),
                          tf.TensorSpec([None], i64), tf.TensorSpec([None], i64), tf.TensorSpec([], i64)]
        self.evaluate = tf.function(self.predict, input_signature=self.signature, autograph=False)

    def weights_numpy(self):
        return [[(W.numpy(), b.numpy()) for W, b in layers] for layers in self.variables]

    def _network(self, x, s):
        tf = self.tf
        h = (x - self.g_mean[s]) * self.g_inv_std[s]
        for l, (W, b) in enumerate(self.variables[s]):
            h = tf.matmul(h, W) + b
            if l < self.n_layers - 1:
                h = self.act(h)
        return self.offsets[s] + self.scale * h[:, 0]

    def atomic_energies(self, G, species):
        tf = self.tf
        if self.S == 1:
            return self._network(G, 0)
        parts = tf.dynamic_partition(G, species, self.S)
        idx = tf.dynamic_partition(tf.range(tf.shape(G)[0]), species, self.S)
        return tf.dynamic_stitch(idx, [self._network(parts[s], s) for s in range(self.S)])

    def predict(self, G, species, dG, pair_i, pair_k, seg, n_struct):
        """Energies (n_struct,) and forces (n_atoms, 3) of a batch of concatenated structures:
        F_k = -sum_{pairs (i, k)} sum_g dE/dG_ig dG_values[p, g, :]."""
        tf = self.tf
        with tf.GradientTape() as inner:
            inner.watch(G)
            Ei = self.atomic_energies(G, species)
            total = tf.reduce_sum(Ei)
        dE = inner.gradient(total, G)
        per_pair = tf.einsum("pg,pgc->pc", tf.gather(dE, pair_i), dG)
        F = -tf.math.unsorted_segment_sum(per_pair, pair_k, tf.shape(G)[0])
        E = tf.math.unsorted_segment_sum(Ei, seg, n_struct)
        return E, F


def _batch_tensors(tf, data: _Data, structs):
    atom_idx, pair_idx, pi, pk, seg = _batch_indices(data, structs)
    return (tf.constant(data.G[atom_idx]), tf.constant(data.species[atom_idx].astype(np.int32)),
            tf.constant(data.dG[pair_idx]), tf.constant(pi), tf.constant(pk), tf.constant(seg),
            tf.constant(structs.size, tf.int64), tf.constant(data.energy[structs]),
            tf.constant(data.n_atoms[structs].astype(np.float64)), tf.constant(data.forces[atom_idx]),
            tf.constant(data.weight[structs]))


def _eval_batches(data: _Data | None, max_atoms=20000):
    if data is None:
        return []
    out, cur, cur_atoms = [], [], 0
    for s in range(data.n_structures):
        if cur and cur_atoms + data.n_atoms[s] > max_atoms:
            out.append(np.array(cur))
            cur, cur_atoms = [], 0
        cur.append(s)
        cur_atoms += data.n_atoms[s]
    out.append(np.array(cur))
    return out


def _tf_data(tf, data: _Data | None):
    """TensorFlow copies of a packed set (G, species, dG, forces, energies, atom counts, weights); the
    numpy dG/dR is released afterwards (it is the bulk of the memory)."""
    if data is None:
        return None
    out = (tf.constant(data.G), tf.constant(data.species.astype(np.int32)), tf.constant(data.dG),
           tf.constant(data.forces), tf.constant(data.energy), tf.constant(data.n_atoms.astype(np.float64)),
           tf.constant(data.weight))
    data.dG = None
    return out


def evaluate_records(model: NetworkPotential, records: Sequence[dict], max_atoms: int = 20000) -> dict:
    """Energies and forces of ``model`` on record dicts through the TensorFlow graph of the training loop
    (stored dG/dR).  Returns ``energy_ev`` (S,), ``forces_ev_per_ang`` (list of (n, 3)) and the RMSEs
    ``energy_rmse_mev_per_atom`` and ``force_rmse_mev_per_ang`` against the records' references."""
    tf = _import_tf()
    data = _pack(list(records), model.params)
    if data is None:
        raise ValueError("evaluate_records: no records")
    net = _TFNetwork(tf, model.params, model.network, model.weights, model.g_mean, model.g_std,
                     model.energy_offsets, model.energy_scale)
    E = np.empty(data.n_structures)
    F = np.empty_like(data.forces)
    for structs in _eval_batches(data, max_atoms):
        t = _batch_tensors(tf, data, structs)
        e, f = net.evaluate(*t[:7])
        E[structs] = e.numpy()
        atom_idx = np.concatenate([np.arange(data.atom_start[s], data.atom_start[s + 1]) for s in structs])
        F[atom_idx] = f.numpy()
    forces = [F[data.atom_start[s]:data.atom_start[s + 1]] for s in range(data.n_structures)]
    dE = (E - data.energy) / data.n_atoms
    return {"energy_ev": E, "forces_ev_per_ang": forces,
            "energy_rmse_mev_per_atom": 1000.0 * float(np.sqrt(np.mean(dE ** 2))),
            "force_rmse_mev_per_ang": 1000.0 * float(np.sqrt(np.mean((F - data.forces) ** 2)))}


def _training_sets(train_records, val_records, params: MBPParameters):
    """Packed training and validation sets (validation may be None); keys must not be in both."""
    train = _pack(train_records, params)
    if train is None:
        raise ValueError("train_model: no training records")
    val = _pack(val_records, params)
    if val is not None:
        clash = {r["key"] for r in train_records} & {r["key"] for r in val_records}
        if clash:
            raise ValueError(f"train_model: keys in both training and validation sets: {sorted(clash)[:5]}")
    return train, val


def _energy_scale(train: "_Data", offsets: np.ndarray) -> float:
    """The network output scale: the RMS force of the training set (eV/Å), or, without forces, the
    spread of the per-atom energies left after the offsets."""
    force_rms = float(np.sqrt(np.mean(train.forces ** 2)))
    if force_rms > 1e-8:
        return force_rms
    resid = (train.energy - train.counts @ offsets) / train.n_atoms
    return float(resid.std()) if resid.std() > 1e-8 else 1.0


def _gather_batch(tf, data: "_Data", data_t, structs):
    """One mini-batch as contiguous tensors (gathered when the batches are drawn, not at every step:
    the gather of dG/dR costs several times the step itself for large cells)."""
    atom_idx, pair_idx, pi, pk, seg = (tf.constant(x) for x in _batch_indices(data, structs))
    st = tf.constant(np.asarray(structs, np.int64))
    G_all, sp_all, dG_all, F_all, E_all, n_all, w_all = data_t
    return (tf.gather(G_all, atom_idx), tf.gather(sp_all, atom_idx), tf.gather(dG_all, pair_idx), pi, pk, seg,
            tf.constant(len(structs), tf.int64), tf.gather(E_all, st), tf.gather(n_all, st),
            tf.gather(F_all, atom_idx), tf.gather(w_all, st))


def _adam_train_step(tf, net: "_TFNetwork", settings: "TrainSettings"):
    """The compiled training step: weighted energy + force loss, one Adam update (float64)."""
    f64 = tf.float64
    flat_vars = net.flat_variables
    adam_m = [tf.Variable(tf.zeros_like(v)) for v in flat_vars]
    adam_v = [tf.Variable(tf.zeros_like(v)) for v in flat_vars]
    adam_t = tf.Variable(0.0, dtype=f64)
    beta1, beta2, eps = settings.adam_beta1, settings.adam_beta2, settings.adam_epsilon
    c_beta1, c_beta2 = tf.constant(beta1, f64), tf.constant(beta2, f64)
    w_e, w_f = settings.energy_weight, settings.force_weight
    per_atom_loss = settings.energy_loss == "per_atom"
    sig = net.signature + [tf.TensorSpec([None], f64), tf.TensorSpec([None], f64),
                           tf.TensorSpec([None, 3], f64), tf.TensorSpec([None], f64), tf.TensorSpec([], f64)]

    @tf.function(input_signature=sig, autograph=False)
    def train_step(G, sp, dG, pair_i, pair_k, seg, n_struct, E_ref, n_at, F_ref, weight, lr):
        with tf.GradientTape() as tape:
            E, F = net.predict(G, sp, dG, pair_i, pair_k, seg, n_struct)
            dE = E - E_ref
            if per_atom_loss:
                dE = dE / n_at
            w_atom = tf.gather(weight, seg)[:, None]
            loss = (w_e * tf.reduce_mean(weight * dE * dE)
                    + w_f * tf.reduce_mean(w_atom * tf.square(F - F_ref)))
        grads = tape.gradient(loss, flat_vars)
        adam_t.assign_add(1.0)
        t = adam_t
        lr_t = lr * tf.sqrt(1.0 - tf.pow(c_beta2, t)) / (1.0 - tf.pow(c_beta1, t))
        for v, m, s2, gr in zip(flat_vars, adam_m, adam_v, grads):
            m.assign(beta1 * m + (1.0 - beta1) * gr)
            s2.assign(beta2 * s2 + (1.0 - beta2) * gr * gr)
            v.assign_sub(lr_t * m / (tf.sqrt(s2) + eps))
        return loss

    return train_step


def _rmse_mev(net: "_TFNetwork", batches, n_structures):
    """Energy (meV/atom) and force (meV/Å) RMSE over gathered batches; (None, None) without batches."""
    if not batches:
        return None, None
    se_e, se_f, n_f = 0.0, 0.0, 0
    for t in batches:
        E, F = net.evaluate(*t[:7])
        dE = (E.numpy() - t[7].numpy()) / t[8].numpy()
        se_e += float(np.sum(dE * dE))
        dF = F.numpy() - t[9].numpy()
        se_f += float(np.sum(dF * dF))
        n_f += dF.size
    return 1000.0 * math.sqrt(se_e / n_structures), 1000.0 * math.sqrt(se_f / n_f)


def _metrics_line(row: dict) -> list:
    return ["" if row[c] is None else (f"{row[c]:.17g}" if isinstance(row[c], float) else row[c])
            for c in METRICS_COLUMNS]


def train_model(train_records: Sequence[dict], val_records: Sequence[dict] | None, params: MBPParameters,
                settings: TrainSettings | None = None, out_dir=".", progress: Callable[[str], None] | None = None,
                ) -> dict:
    """Train one network potential; write ``metrics.csv``, ``model.npz`` and ``model.json`` to ``out_dir``.

    ``train_records``/``val_records`` are record dicts (:mod:`kappaflow.ml.tfrecords`); a record may
    carry an optional ``loss_weight`` (default 1) multiplying its energy and force terms in the loss.
    ``val_records`` may be empty or None (the best checkpoint is then chosen by the training force
    RMSE).  ``progress(line)`` is called every ``settings.progress_every`` epochs.  Returns a summary
    dict: best_epoch, best_metrics, final_metrics, selected_on, epochs, wall_s, n_train, n_val,
    model_dir.
    """
    settings = settings or TrainSettings()
    if not isinstance(params, MBPParameters):
        raise TypeError("params must be MBPParameters")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_records = list(train_records)
    val_records = list(val_records or [])
    train, val = _training_sets(train_records, val_records, params)

    tf = _import_tf()
    tf.keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    f64 = tf.float64

    S, g = params.n_species, params.g_size
    net_settings = settings.network
    sizes = (g,) + net_settings.hidden_layers + (1,)
    rng = np.random.default_rng(settings.seed)
    g_mean, g_std = _normalisation(train, S, g, settings)
    offsets = _energy_offsets(train, S, settings)
    scale = _energy_scale(train, offsets)
    net = _TFNetwork(tf, params, net_settings, _init_weights(rng, sizes, S), g_mean, g_std, offsets, scale)
    train_step = _adam_train_step(tf, net, settings)

    # Training and validation sets live in TensorFlow; mini-batches are gathered every
    # ``reshuffle_every`` epochs (_gather_batch).
    train_t = _tf_data(tf, train)
    val_batches = ([_gather_batch(tf, val, _tf_data(tf, val), b) for b in _eval_batches(val)]
                   if val is not None else [])
    n_val = 0 if val is None else val.n_structures
    base_meta = {
        "format": MODEL_FORMAT,
        "species": list(params.species),
        "descriptor": params.to_dict(),
        "architecture": {"network": net_settings.to_dict(), "layer_sizes": list(sizes),
                         "output": "E_i = offset[s] + energy_scale * NN_s((G_i - g_mean[s]) / g_std[s])"},
        "normalisation": {"standardize": settings.standardize, "g_mean": g_mean.tolist(),
                          "g_std": g_std.tolist()},
        "energy_offsets_ev": dict(zip(params.species, offsets.tolist())),
        "energy_scale_ev": scale,
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "n_train": train.n_structures,
        "n_val": n_val,
        "train_keys": [r["key"] for r in train_records],
        "val_keys": [r["key"] for r in val_records],
    }

    def checkpoint(meta):
        save_model(NetworkPotential(params, net_settings, net.weights_numpy(), g_mean, g_std, offsets, scale,
                                    meta), out_dir)

    best = {"force": math.inf, "epoch": None, "row": None}
    t0 = time.perf_counter()
    select_on = "val" if val is not None else "train"
    n_batches = -(-train.n_structures // settings.batch_size)
    last_row = None
    with open(out_dir / METRICS_CSV, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(METRICS_COLUMNS)
        fh.flush()
        for epoch in range(settings.epochs):
            lr = settings.learning_rate_at(epoch)
            lr_t = tf.constant(lr, f64)
            if epoch % settings.reshuffle_every == 0:
                order = rng.permutation(train.n_structures)
                batches = None   # release the previous batches before gathering new ones
                bs = settings.batch_size
                batches = [_gather_batch(tf, train, train_t, order[b * bs:(b + 1) * bs]) for b in range(n_batches)]
                batch_order = range(n_batches)
            else:
                batch_order = rng.permutation(n_batches)
            for b in batch_order:
                train_step(*batches[b], lr_t)
            last = epoch == settings.epochs - 1
            if not ((epoch + 1) % settings.eval_every == 0 or last):
                continue
            tr_e, tr_f = _rmse_mev(net, batches, train.n_structures)
            va_e, va_f = _rmse_mev(net, val_batches, n_val)
            wall = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "train_energy_rmse_mev_per_atom": tr_e,
                   "train_force_rmse_mev_per_ang": tr_f, "val_energy_rmse_mev_per_atom": va_e,
                   "val_force_rmse_mev_per_ang": va_f, "learning_rate": lr, "wall_s": wall}
            writer.writerow(_metrics_line(row))
            fh.flush()
            last_row = row
            score = va_f if val is not None else tr_f
            if not math.isfinite(score):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (force RMSE {score})")
            if score < best["force"]:
                best.update(force=score, epoch=epoch + 1, row=row)
                checkpoint(dict(base_meta, best_epoch=epoch + 1, best_metrics=row, selected_on=select_on,
                                complete=False))
            if progress is not None and ((epoch + 1) % settings.progress_every == 0 or last):
                msg = f"epoch {epoch + 1}/{settings.epochs}: train E {tr_e:.3f} meV/atom, F {tr_f:.3f} meV/Å"
                if val is not None:
                    msg += f"; val E {va_e:.3f} meV/atom, F {va_f:.3f} meV/Å"
                msg += f"; lr {lr:.2e}; best epoch {best['epoch']}; {wall:.1f} s"
                progress(msg)

    wall = time.perf_counter() - t0
    # Mark the best checkpoint complete (the same weights, rewritten with complete=True).
    model = NetworkPotential.load(out_dir)
    model.metadata.update(complete=True, final_metrics=last_row, epochs_run=settings.epochs, wall_s=wall)
    save_model(model, out_dir)
    return {"best_epoch": best["epoch"], "best_metrics": best["row"], "final_metrics": last_row,
            "selected_on": select_on, "epochs": settings.epochs, "wall_s": wall,
            "n_train": train.n_structures, "n_val": n_val, "model_dir": str(out_dir)}
