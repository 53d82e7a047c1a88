"""Snakemake script: kappa with noisy (or ML) forces on the displaced supercells, no pw.x."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_noise_job

amplitude = float(getattr(snakemake.params, "amplitude", 0.0) or 0.0)
seed = int(getattr(snakemake.wildcards, "seed", 0))
ml = snakemake.input.forces if hasattr(snakemake.input, "forces") else None
run(run_noise_job, snakemake.input.manifest, snakemake.input.disp, snakemake.params.store,
    snakemake.params.reap, snakemake.params.bte, snakemake.params.mesh, amplitude, seed,
    snakemake.output.kappa, ml_forces_path=ml, log=snakemake.log)
