"""Snakemake script: the vc-relax pw.x input from the user's unit cell."""
from kappaflow.scriptutil import run
from kappaflow.steps import relax_input

run(relax_input, snakemake.input.unitcell, snakemake.output[0], snakemake.params.pseudo_dir,
    snakemake.params.overrides, log=snakemake.log)
