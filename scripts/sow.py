"""Snakemake script (checkpoint): displaced supercells -> pw.x inputs in the hash-keyed store."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_sow

dft_cfg = dict(snakemake.config["dft"])
run(run_sow, snakemake.input.structure, snakemake.input.template, snakemake.params.sow, dft_cfg,
    snakemake.params.store, snakemake.output.manifest, snakemake.output.disp, log=snakemake.log)
