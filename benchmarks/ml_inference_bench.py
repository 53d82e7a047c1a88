"""Committee inference on the seed thesis' workload (not a test): 212 GeS2 supercells of 54 atoms.

A 5-member committee (seed architecture: 128 G-values → 64 → 32 → 1 per species) is trained briefly
(timing does not depend on how well) on rattled supercells labelled by the mock GeS2 Morse network,
then evaluates 212 rattled copies of the 3×3×1 supercell of config/systems/ges2/GeS2.scf.in in
float64, descriptors included, by both routes:
  * stored route: numpy descriptors with sparse dG/dR, then the networks (chain rule);
  * on-the-fly route: descriptors and forces inside TensorFlow (``Committee.predict_many(atoms)``).
PANNA's published number for this workload is 7.03 s.

    python3 benchmarks/ml_inference_bench.py [--members 5] [--n 212]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gvectors_bench import ges2_supercell  # noqa: E402

from kappaflow.ml.gvectors import MBPParameters, compute_descriptors  # noqa: E402
from kappaflow.ml.model import Committee, NetworkSettings, TrainSettings, train_model  # noqa: E402
from kappaflow.ml.tfrecords import record_from_atoms  # noqa: E402
from kappaflow.mock.potentials import ges2_mock_calculator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--n", type=int, default=212)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    params = MBPParameters.seed_ges2()
    base = ges2_supercell()
    calc = ges2_mock_calculator()
    rng = np.random.default_rng(0)

    def rattled(scale):
        a = base.copy()
        a.positions += scale * rng.standard_normal(a.positions.shape)
        return a

    train = []
    for i in range(20):
        a = rattled(0.03)
        a.calc = calc
        train.append(record_from_atoms(a, params, key=f"s{i:03d}"))
    tmp = Path(tempfile.mkdtemp(prefix="kappaflow-bench-"))
    dirs, t_train = [], []
    for m in range(args.members):
        t0 = time.perf_counter()
        train_model(train, None, params, TrainSettings(epochs=args.epochs, seed=m,
                                                       network=NetworkSettings(hidden_layers=(64, 32))),
                    tmp / f"m{m}")
        t_train.append(time.perf_counter() - t0)
        dirs.append(tmp / f"m{m}")
    committee = Committee.load(dirs)
    structures = [rattled(0.01) for _ in range(args.n)]
    print(f"[bench] {args.n} GeS2 supercells of {len(base)} atoms, {args.members}-member committee, float64")
    print(f"[bench] training: {np.mean(t_train) / args.epochs * 1000:.0f} ms per epoch of 20 structures "
          f"(first member includes TensorFlow start-up: {t_train[0]:.1f} s for {args.epochs} epochs)")
    for attempt in range(2):
        t0 = time.perf_counter()
        descs = [compute_descriptors(a.positions, np.asarray(a.cell), a.get_chemical_symbols(), params)
                 for a in structures]
        t_desc = time.perf_counter() - t0
        stored = committee.predict_many(descs)
        t_stored = time.perf_counter() - t0
        t0 = time.perf_counter()
        fly = committee.predict_many(structures)
        t_fly = time.perf_counter() - t0
        print(f"[bench] run {attempt + 1}: stored route {t_stored:.2f} s (descriptors + dG/dR {t_desc:.2f} s); "
              f"on-the-fly TF route {t_fly:.2f} s")
    diff = max(float(np.abs(p["forces_ev_per_ang"] - q["forces_ev_per_ang"]).max()) for p, q in zip(stored, fly))
    print(f"[bench] max |F_stored - F_on-the-fly| = {diff:.2e} eV/Å")
    print(f"[bench] peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
