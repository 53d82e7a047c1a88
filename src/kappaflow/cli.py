"""``kappaflow``: the steps a user may want to run by hand, without Snakemake."""

from __future__ import annotations

import argparse
import json
import sys

from kappaflow.errors import KappaflowError


def _validate(args):
    from kappaflow import config

    cfg = config.load(args.configfile, check_pseudopotentials=True)  # ready for a real run
    print(json.dumps(cfg, indent=1) if args.show else f"{args.configfile}: valid (system {cfg['name']})")


def _parse_pw(args):
    from kappaflow.qe.pwout import read_pw_output

    run = read_pw_output(args.output, expected_n_atoms=args.atoms)
    print(f"{args.output}: {run.n_atoms} atoms, E = {run.energy_ev:.8f} eV, pw.x {run.qe_version}, "
          f"WALL {run.wall_time_s:.2f} s, max |F| = {abs(run.forces_ev_per_ang).max():.3e} eV/Å")


def _run_pw(args):
    from kappaflow import dft

    dft.run_pw(args.input, args.output, args.pw_command)


def _sow(args):
    from kappaflow import config, steps

    cfg = config.load(args.configfile)
    manifest = steps.run_sow(args.structure, cfg["supercell_template"], cfg["sow"], cfg["dft"],
                             args.store, args.manifest, args.disp_yaml)
    print(f"{manifest['n_displaced_fc3']} displaced supercells, "
          f"{len({j['key'] for j in manifest['jobs']})} unique pw.x inputs in {args.store}")


def _failures(args):
    from pathlib import Path

    from kappaflow import dft

    root = Path(args.results)
    if not root.is_dir():
        raise KappaflowError(f"{root}: no such results directory (expected results/<name>)")
    rows = dft.collect_failures(root)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(dft.format_failures(rows))


def _plan(args):
    from pathlib import Path

    from kappaflow import config, plan
    from kappaflow.steps import progress

    cfg = config.load(args.configfile)
    if args.results_dir:
        cfg["results_dir"] = args.results_dir
    supercells = [plan.parse_supercell_arg(s) for s in args.supercell] if args.supercell else None
    candidates = plan.candidates_from_config(cfg, supercells=supercells, cutoffs=args.cutoffs,
                                             strategies=args.strategies, n_random=args.n_random)
    out = Path(args.out_dir or Path(cfg["results_dir"]) / cfg["name"] / "plan")
    plan.run_plan(cfg, out / "plan.csv", out / "plan.png", candidates, progress=progress)


def _init(args):
    from kappaflow.init import init_system
    from kappaflow.steps import progress

    overrides = {}
    for item in args.pseudo or []:
        if "=" not in item:
            raise KappaflowError(f"--pseudo {item!r}: expected <El>=<file>, e.g. S=S.pbe-n-rrkjus_psl.1.0.0.UPF")
        el, name = item.split("=", 1)
        overrides[el] = name
    init_system(args.structure, args.name or _stem(args.structure), args.pseudo_dir, args.functional,
                systems_dir=args.systems_dir, k_spacing_per_ang=args.k_spacing, q_spacing_per_ang=args.q_spacing,
                ecutwfc_ry=args.ecutwfc, ecutrho_ry=args.ecutrho, pseudo_overrides=overrides,
                smearing=args.smearing, force=args.force, log=progress)


def _stem(path) -> str:
    from pathlib import Path

    return Path(path).stem.split(".")[0].lower()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kappaflow", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate a config file (with its system file)")
    p.add_argument("configfile")
    p.add_argument("--show", action="store_true", help="print the effective configuration")
    p.set_defaults(func=_validate)
    p = sub.add_parser("parse-pw", help="check and summarise a pw.x output")
    p.add_argument("output")
    p.add_argument("--atoms", type=int, default=None, help="expected number of atoms")
    p.set_defaults(func=_parse_pw)
    p = sub.add_parser("run-pw", help="run pw.x on one input, validate, write the output atomically")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--pw-command", default="pw.x")
    p.set_defaults(func=_run_pw)
    p = sub.add_parser("sow", help="write the displaced-supercell pw.x inputs for a structure")
    p.add_argument("configfile")
    p.add_argument("structure", help="structure JSON (results/<system>/structure/unitcell.json)")
    p.add_argument("--store", default="dft-store")
    p.add_argument("--manifest", default="manifest.json")
    p.add_argument("--disp-yaml", default="phono3py_disp.yaml")
    p.set_defaults(func=_sow)
    p = sub.add_parser("failures", help="list every failed pw.x run of a results directory (key, role, "
                       "index, reason, log), from the failure.json records the dft jobs leave")
    p.add_argument("results", help="results/<name>")
    p.add_argument("--json", action="store_true", help="the records as JSON")
    p.set_defaults(func=_failures)
    p = sub.add_parser("plan", help="price candidate settings (supercells, cutoffs, strategies) before any pw.x run")
    p.add_argument("configfile")
    p.add_argument("--supercell", action="append", help="FC3 supercell, e.g. 3x3x1 (repeatable; default plan/sow)")
    p.add_argument("--cutoffs", type=float, nargs="+", help="pair cutoffs in Å; -2 -3 -4 = neighbour shells")
    p.add_argument("--strategies", nargs="+", choices=["systematic", "random"])
    p.add_argument("--n-random", type=int, default=None, help="random strategy: supercells (default sow.n_random)")
    p.add_argument("--results-dir", default=None, help="where the cost table and store are read (default config)")
    p.add_argument("--out-dir", default=None, help="plan.csv and plan.png (default results/<name>/plan)")
    p.set_defaults(func=_plan)
    p = sub.add_parser("init", help="a new material from a CIF/POSCAR/any ASE-readable structure: the system file, "
                       "the unit-cell pw.x input and the supercell template (supercell and cutoff from the plan)")
    p.add_argument("structure", help="CIF, POSCAR, or any file ASE reads")
    p.add_argument("--name", default=None, help="system name (default: the file's stem): config/systems/<name>.yaml")
    p.add_argument("--pseudo-dir", required=True, help="directory of the UPF files (e.g. /usr/share/espresso/pseudo)")
    p.add_argument("--functional", required=True, help="as in the UPF names: pz (LDA), pbe, pbesol, ...")
    p.add_argument("--pseudo", action="append", help="<El>=<file> to choose one (repeatable)")
    p.add_argument("--ecutwfc", type=float, default=None, help="Ry (default: the largest the UPF files suggest)")
    p.add_argument("--ecutrho", type=float, default=None, help="Ry (default: suggested, or 8 x ecutwfc for US/PAW)")
    p.add_argument("--k-spacing", type=float, default=0.25, help="largest k-point spacing, 1/Å with 2π (default 0.25)")
    p.add_argument("--q-spacing", type=float, default=0.1, help="BTE q-mesh spacing, 1/Å with 2π (default 0.1)")
    p.add_argument("--smearing", default=None, help="a metal: pw.x smearing (mv, gaussian, ...), degauss 0.01 Ry")
    p.add_argument("--systems-dir", default="config/systems")
    p.add_argument("--force", action="store_true", help="overwrite an existing system of that name")
    p.set_defaults(func=_init)
    args = ap.parse_args(argv)
    try:
        args.func(args)
    except KappaflowError as exc:
        print(f"kappaflow: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
