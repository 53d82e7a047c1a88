"""Snakemake script: forces -> fc2/fc3 (phono3py hdf5 and ShengBTE text)."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_reap

run(run_reap, snakemake.input.manifest, snakemake.input.disp, snakemake.params.store,
    snakemake.params.reap, dict(snakemake.output.items()), log=snakemake.log)
