"""TFRecord packing of descriptors (kappaflow.ml.tfrecords): bit-exact round trips, shards, validation."""


import numpy as np
import pytest

from _ml_data import GES2_WIDE, SI_SMALL, ges2_cell, si_primitive, sw_si_records
from kappaflow.ml.dataset import make_example
from kappaflow.ml.gvectors import compute_descriptors
from kappaflow.ml.tfrecords import (RECORD_KEYS, check_record, load_records, read_tfrecords,
                                    record_from_atoms, record_from_example, write_tfrecords)


def _ges2_record(key, seed):
    atoms = ges2_cell(rattle=0.05, seed=seed)
    rng = np.random.default_rng(seed)
    # Energies/forces with full float64 mantissas, to catch any float32 rounding.
    return record_from_atoms(atoms, GES2_WIDE, key, energy_ev=-123.456789012345678 + rng.random(),
                             forces_ev_per_ang=rng.standard_normal((len(atoms), 3)) / 3.0)


def _assert_same(a, b):
    assert set(a) == set(b) == set(RECORD_KEYS)
    assert a["key"] == b["key"]
    assert list(a["symbols"]) == list(b["symbols"])
    assert type(b["energy_ev"]) is float and a["energy_ev"] == b["energy_ev"]
    for k in RECORD_KEYS:
        if k in ("key", "symbols", "energy_ev"):
            continue
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert y.dtype == (np.int64 if k in ("species_index", "dG_pairs") else np.float64), k
        assert x.shape == y.shape, k
        # bit for bit (also distinguishes -0.0 from 0.0)
        assert x.astype(y.dtype).tobytes() == y.tobytes(), k


@pytest.fixture(scope="module")
def records():
    return [_ges2_record(f"g{k}", k) for k in range(3)] + [_ges2_record("lone", 7)]


def test_round_trip_bit_exact_and_shards(tmp_path, records):
    paths = write_tfrecords(records, tmp_path / "tfr", prefix="train", elements_per_file=2)
    assert [p.name for p in paths] == ["train-1-2.tfrecord", "train-2-2.tfrecord"]
    assert not [p for p in (tmp_path / "tfr").iterdir() if p.name.endswith(".tmp")]
    back = load_records(paths)
    assert len(back) == len(records)
    for a, b in zip(records, back):
        _assert_same(a, b)


def test_tf_dataset_matches(tmp_path, records):
    import tensorflow as tf

    paths = write_tfrecords(records[:2], tmp_path, elements_per_file=1000)
    assert [p.name for p in paths] == ["data-1-1.tfrecord"]
    items = list(read_tfrecords(paths))
    assert len(items) == 2
    for rec, item in zip(records, items):
        assert item["G"].dtype == tf.float64 and item["dG_values"].dtype == tf.float64
        assert item["dG_pairs"].dtype == tf.int64 and item["species_index"].dtype == tf.int64
        as_numpy = {k: v.numpy() for k, v in item.items()}
        as_numpy["key"] = as_numpy["key"].decode()
        as_numpy["symbols"] = [s.decode() for s in as_numpy["symbols"]]
        as_numpy["energy_ev"] = float(as_numpy["energy_ev"])
        _assert_same(rec, as_numpy)


def test_record_from_example_matches_descriptors():
    atoms = si_primitive(rattle=0.04, seed=3)
    forces = np.random.default_rng(1).standard_normal((2, 3))
    ex = make_example("si2", atoms.get_chemical_symbols(), atoms.cell[:], atoms.positions, -10.5, forces)
    rec = record_from_example(ex, SI_SMALL)
    desc = compute_descriptors(atoms.positions, atoms.cell[:], ["Si", "Si"], SI_SMALL)
    assert rec["key"] == "si2" and rec["energy_ev"] == -10.5
    np.testing.assert_array_equal(rec["G"], desc.G)
    np.testing.assert_array_equal(rec["dG_values"], desc.dG_values)
    np.testing.assert_array_equal(rec["dG_pairs"], desc.dG_pairs)
    np.testing.assert_array_equal(rec["forces_ev_per_ang"], forces)
    check_record(rec)


def test_sw_records_round_trip(tmp_path):
    recs = sw_si_records(3, seed=4)
    back = load_records(write_tfrecords(recs, tmp_path, prefix=""))
    assert (tmp_path / "1-1.tfrecord").exists()
    for a, b in zip(recs, back):
        _assert_same(a, b)


def test_validation_errors(tmp_path, records):
    bad = dict(records[0])
    bad["G"] = bad["G"][:, :-1]
    with pytest.raises(ValueError, match="dG_values"):
        write_tfrecords([bad], tmp_path)
    with pytest.raises(ValueError, match="duplicate keys"):
        write_tfrecords([records[0], records[0]], tmp_path)
    nan = dict(records[0])
    nan["forces_ev_per_ang"] = np.full_like(nan["forces_ev_per_ang"], np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        check_record(nan)
    missing = {k: v for k, v in records[0].items() if k != "dG_pairs"}
    with pytest.raises(ValueError, match="missing"):
        check_record(missing)
    with pytest.raises(ValueError, match="no records"):
        write_tfrecords([], tmp_path)
    with pytest.raises(FileNotFoundError):
        load_records([tmp_path / "nope.tfrecord"])
    assert not list(tmp_path.glob("*.tfrecord"))
