"""Pack descriptors, energies and forces into TFRecord shards (PANNA's ``tfr_packer`` step).

One record is one structure.  Shards are named ``<prefix>-<i>-<n>.tfrecord`` with ``i`` counted from 1
as PANNA's ``tfr_packer.py`` does (``data-1-3.tfrecord``, ``data-2-3.tfrecord``, ...), at most
``elements_per_file`` records each, written to a temporary sibling and renamed into place.

Record dict (the input of :func:`write_tfrecords`, the output of :func:`load_records`)
------------------------------------------------------------------------------------
``key`` str; ``symbols`` list[str]; ``species_index`` int64 (n,); ``positions_ang`` (n, 3);
``cell_ang`` (3, 3) rows; ``energy_ev`` float; ``forces_ev_per_ang`` (n, 3); ``G`` (n, g);
``dG_pairs`` int64 (p, 2) rows ``[i, k]``; ``dG_values`` (p, g, 3) = dG_i/dR_k (see
:mod:`kappaflow.ml.gvectors`).  Floats are float64 throughout.

Features (names follow PANNA where PANNA has one)
-------------------------------------------------
=================  =========  ===========================================================
``name``           bytes      the key (PANNA 2)
``energy``         bytes      float64, total energy in eV
``species``        int64[n]   species index per atom (into the descriptor species)
``symbols``        bytes[n]   element symbol per atom
``gvects``         bytes      float64 (n, g), C order
``dgvect_size``    int64      number of derivative rows p
``dgvect_indices1`` int64[p]  atom i whose G is differentiated
``dgvect_indices2`` int64[p]  atom k that moves
``dgvect_values``  bytes      float64 (p, g, 3) = dG_i/dR_k
``forces``         bytes      float64 (n, 3), eV/Å
``positions``      bytes      float64 (n, 3), Å
``cell``           bytes      float64 (3, 3), Å, lattice vectors as rows
``n_atoms``        int64      n
``g_size``         int64      g
=================  =========  ===========================================================

Why bytes: ``tf.train.FloatList`` holds float32, which would round G, its derivatives and the forces
to 7 digits.  Every float array is stored as the raw little-endian IEEE-754 float64 bytes
(``np.asarray(x, '<f8').tobytes()``) in a one-element ``BytesList`` and decoded with
``tf.io.decode_raw(..., tf.float64, little_endian=True)`` (or ``np.frombuffer``), which round-trips bit
for bit.  The layout therefore differs from PANNA 1.x's float32 features of the same names: PANNA's own
parser cannot read these files and vice versa (the derivative indices are also per (i, k) row here,
not per flattened G component).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from kappaflow import atomic

__all__ = ["RECORD_KEYS", "write_tfrecords", "read_tfrecords", "load_records", "record_from_example",
           "record_from_atoms", "check_record", "shard_name"]

#: keys of a record dict
RECORD_KEYS = ("key", "symbols", "species_index", "positions_ang", "cell_ang", "energy_ev",
               "forces_ev_per_ang", "G", "dG_pairs", "dG_values")


def _tf():
    from kappaflow.ml.tfimport import import_tensorflow

    return import_tensorflow()


def shard_name(prefix: str, i: int, n: int) -> str:
    """PANNA's shard name ``<prefix>-<i>-<n>.tfrecord`` (``i`` from 1); ``<i>-<n>`` for an empty prefix."""
    return f"{prefix}-{i}-{n}.tfrecord" if prefix else f"{i}-{n}.tfrecord"


def check_record(record: dict) -> dict:
    """A validated copy of ``record`` with canonical dtypes (float64 / int64); ValueError if
    anything is missing, mis-shaped or non-finite."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"record {record.get('key')!r}: missing key(s) {missing}")
    key = record["key"]
    if not isinstance(key, str) or not key:
        raise ValueError(f"record key must be a non-empty string, got {key!r}")
    symbols = [str(s) for s in record["symbols"]]
    n = len(symbols)
    out = {"key": key, "symbols": symbols}
    out["species_index"] = np.asarray(record["species_index"], dtype=np.int64)
    out["positions_ang"] = np.asarray(record["positions_ang"], dtype=np.float64)
    out["cell_ang"] = np.asarray(record["cell_ang"], dtype=np.float64)
    out["energy_ev"] = float(record["energy_ev"])
    out["forces_ev_per_ang"] = np.asarray(record["forces_ev_per_ang"], dtype=np.float64)
    out["G"] = np.asarray(record["G"], dtype=np.float64)
    out["dG_pairs"] = np.asarray(record["dG_pairs"], dtype=np.int64)
    out["dG_values"] = np.asarray(record["dG_values"], dtype=np.float64)
    g = out["G"].shape[1] if out["G"].ndim == 2 else -1
    p = out["dG_pairs"].shape[0] if out["dG_pairs"].ndim == 2 else -1
    expected = {"species_index": (n,), "positions_ang": (n, 3), "cell_ang": (3, 3),
                "forces_ev_per_ang": (n, 3), "G": (n, g), "dG_pairs": (p, 2), "dG_values": (p, g, 3)}
    for name, shape in expected.items():
        if out[name].shape != shape or -1 in shape:
            raise ValueError(f"record {key!r}: {name} has shape {out[name].shape}, expected "
                             f"{shape} for {n} atoms")
    for name in ("positions_ang", "cell_ang", "forces_ev_per_ang", "G", "dG_values"):
        if not np.all(np.isfinite(out[name])):
            raise ValueError(f"record {key!r}: {name} contains non-finite values")
    if not np.isfinite(out["energy_ev"]):
        raise ValueError(f"record {key!r}: energy is {out['energy_ev']}")
    if p and (out["dG_pairs"].min() < 0 or out["dG_pairs"].max() >= n):
        raise ValueError(f"record {key!r}: dG_pairs index out of range 0..{n - 1}")
    return out


def _f64_bytes(a) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _serialize(rec: dict) -> bytes:
    tf = _tf()
    train = tf.train

    def b(values):
        return train.Feature(bytes_list=train.BytesList(value=values))

    def i(values):
        return train.Feature(int64_list=train.Int64List(value=[int(v) for v in values]))

    feature = {
        "name": b([rec["key"].encode()]),
        "energy": b([_f64_bytes([rec["energy_ev"]])]),
        "species": i(rec["species_index"]),
        "symbols": b([s.encode() for s in rec["symbols"]]),
        "gvects": b([_f64_bytes(rec["G"])]),
        "dgvect_size": i([rec["dG_pairs"].shape[0]]),
        "dgvect_indices1": i(rec["dG_pairs"][:, 0]),
        "dgvect_indices2": i(rec["dG_pairs"][:, 1]),
        "dgvect_values": b([_f64_bytes(rec["dG_values"])]),
        "forces": b([_f64_bytes(rec["forces_ev_per_ang"])]),
        "positions": b([_f64_bytes(rec["positions_ang"])]),
        "cell": b([_f64_bytes(rec["cell_ang"])]),
        "n_atoms": i([len(rec["symbols"])]),
        "g_size": i([rec["G"].shape[1]]),
    }
    return train.Example(features=train.Features(feature=feature)).SerializeToString()


def write_tfrecords(records: Iterable[dict], out_dir, prefix: str = "data",
                    elements_per_file: int = 1000) -> list[Path]:
    """Write ``records`` into ``out_dir/<prefix>-<i>-<n>.tfrecord`` shards; returns their paths in order.

    Every record is validated (:func:`check_record`) and all must share one G size; keys must be
    unique.  Each shard is written to a temporary sibling and renamed into place, so a killed run
    leaves no partial shard under the final name.  Shards of an earlier run with the same prefix
    but a different ``n`` are not removed.
    """
    if elements_per_file < 1:
        raise ValueError(f"elements_per_file must be >= 1, got {elements_per_file}")
    if "/" in prefix or "\\" in prefix:
        raise ValueError(f"prefix must not contain path separators: {prefix!r}")
    recs = [check_record(r) for r in records]
    if not recs:
        raise ValueError("write_tfrecords: no records")
    sizes = {r["G"].shape[1] for r in recs}
    if len(sizes) != 1:
        raise ValueError(f"write_tfrecords: records have different G sizes {sorted(sizes)}")
    keys = [r["key"] for r in recs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"write_tfrecords: duplicate keys {dup[:5]}")

    tf = _tf()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_files = -(-len(recs) // elements_per_file)
    paths = []
    for f in range(n_files):
        path = out_dir / shard_name(prefix, f + 1, n_files)
        with atomic.atomic_path(path) as tmp:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for rec in recs[f * elements_per_file:(f + 1) * elements_per_file]:
                    writer.write(_serialize(rec))
        paths.append(path)
    return paths


def _feature_spec(tf):
    fixed = tf.io.FixedLenFeature
    var = tf.io.VarLenFeature
    return {
        "name": fixed([], tf.string),
        "energy": fixed([], tf.string),
        "species": var(tf.int64),
        "symbols": var(tf.string),
        "gvects": fixed([], tf.string),
        "dgvect_size": fixed([], tf.int64),
        "dgvect_indices1": var(tf.int64),
        "dgvect_indices2": var(tf.int64),
        "dgvect_values": fixed([], tf.string),
        "forces": fixed([], tf.string),
        "positions": fixed([], tf.string),
        "cell": fixed([], tf.string),
        "n_atoms": fixed([], tf.int64),
        "g_size": fixed([], tf.int64),
    }


def _paths(paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = [str(p) for p in paths]
    for p in out:
        if not Path(p).is_file():
            raise FileNotFoundError(f"TFRecord file not found: {p}")
    return out


def read_tfrecords(paths):
    """A ``tf.data.Dataset`` of record dicts (same keys as :data:`RECORD_KEYS`) read from ``paths``
    (one path or a list, read in the given order): ``key`` and ``symbols`` as tf.string, indices as
    int64, everything else float64."""
    tf = _tf()
    spec = _feature_spec(tf)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        n = ex["n_atoms"]
        g = ex["g_size"]
        p = ex["dgvect_size"]

        def f64(name, shape):
            return tf.reshape(tf.io.decode_raw(ex[name], tf.float64, little_endian=True), shape)

        return {
            "key": ex["name"],
            "symbols": tf.sparse.to_dense(ex["symbols"]),
            "species_index": tf.sparse.to_dense(ex["species"]),
            "positions_ang": f64("positions", tf.stack([n, 3])),
            "cell_ang": f64("cell", [3, 3]),
            "energy_ev": f64("energy", []),
            "forces_ev_per_ang": f64("forces", tf.stack([n, 3])),
            "G": f64("gvects", tf.stack([n, g])),
            "dG_pairs": tf.stack([tf.sparse.to_dense(ex["dgvect_indices1"]),
                                  tf.sparse.to_dense(ex["dgvect_indices2"])], axis=1),
            "dG_values": f64("dgvect_values", tf.stack([p, g, 3])),
        }

    return tf.data.TFRecordDataset(_paths(paths)).map(parse)


def _parse_numpy(raw: bytes) -> dict:
    tf = _tf()
    feat = tf.train.Example.FromString(raw).features.feature

    def f64(name):
        return np.frombuffer(feat[name].bytes_list.value[0], dtype="<f8").astype(np.float64)

    def ints(name):
        return np.asarray(feat[name].int64_list.value, dtype=np.int64)

    n = int(feat["n_atoms"].int64_list.value[0])
    g = int(feat["g_size"].int64_list.value[0])
    p = int(feat["dgvect_size"].int64_list.value[0])
    pairs = np.stack([ints("dgvect_indices1"), ints("dgvect_indices2")], axis=1).reshape(p, 2)
    return {
        "key": feat["name"].bytes_list.value[0].decode(),
        "symbols": [s.decode() for s in feat["symbols"].bytes_list.value],
        "species_index": ints("species"),
        "positions_ang": f64("positions").reshape(n, 3),
        "cell_ang": f64("cell").reshape(3, 3),
        "energy_ev": float(f64("energy")[0]),
        "forces_ev_per_ang": f64("forces").reshape(n, 3),
        "G": f64("gvects").reshape(n, g),
        "dG_pairs": pairs,
        "dG_values": f64("dgvect_values").reshape(p, g, 3),
    }


def load_records(paths) -> list[dict]:
    """All records of ``paths`` as numpy record dicts (the format :func:`write_tfrecords` takes)."""
    tf = _tf()
    return [_parse_numpy(raw.numpy()) for raw in tf.data.TFRecordDataset(_paths(paths))]


def record_from_example(example: dict, params) -> dict:
    """Descriptors (with derivatives) of one PANNA ``.example`` dict, as a record dict.

    The example is validated and converted to Å/eV by :func:`kappaflow.ml.dataset.normalize_example`;
    its cell is periodic in all three directions (PANNA examples always carry lattice vectors).
    """
    from kappaflow.ml.dataset import normalize_example
    from kappaflow.ml.gvectors import compute_descriptors

    ex = normalize_example(example)
    symbols = [a[1] for a in ex["atoms"]]
    positions = np.array([a[2] for a in ex["atoms"]], dtype=np.float64)
    forces = np.array([a[3] for a in ex["atoms"]], dtype=np.float64)
    cell = np.array(ex["lattice_vectors"], dtype=np.float64)
    desc = compute_descriptors(positions, cell, symbols, params, pbc=True, derivatives=True)
    return {"key": ex["key"], "symbols": symbols, "species_index": desc.species_index,
            "positions_ang": positions, "cell_ang": cell, "energy_ev": float(ex["energy"][0]),
            "forces_ev_per_ang": forces, "G": desc.G, "dG_pairs": desc.dG_pairs,
            "dG_values": desc.dG_values}


def record_from_atoms(atoms, params, key: str, energy_ev: float | None = None,
                      forces_ev_per_ang=None) -> dict:
    """A record from an ``ase.Atoms`` (fully periodic); energy and forces default to those of its
    calculator."""
    from kappaflow.ml.gvectors import compute_descriptors

    if not all(atoms.pbc):
        raise ValueError("record_from_atoms: records describe fully periodic cells")
    energy = atoms.get_potential_energy() if energy_ev is None else energy_ev
    forces = atoms.get_forces() if forces_ev_per_ang is None else forces_ev_per_ang
    positions = np.array(atoms.get_positions(), dtype=np.float64)
    cell = np.array(atoms.cell[:], dtype=np.float64)
    symbols = atoms.get_chemical_symbols()
    desc = compute_descriptors(positions, cell, symbols, params, pbc=True, derivatives=True)
    return {"key": key, "symbols": symbols, "species_index": desc.species_index,
            "positions_ang": positions, "cell_ang": cell, "energy_ev": float(energy),
            "forces_ev_per_ang": np.array(forces, dtype=np.float64), "G": desc.G,
            "dG_pairs": desc.dG_pairs, "dG_values": desc.dG_values}
