"""Snakemake script: the unit cell to displace (relaxed, or as given)."""
from kappaflow.scriptutil import run
from kappaflow.steps import structure_from_input, structure_from_relax

if "pw_out" in snakemake.input.keys():
    run(structure_from_relax, snakemake.input.pw_in, snakemake.input.pw_out, snakemake.output[0],
        log=snakemake.log)
else:
    run(structure_from_input, snakemake.input.unitcell, snakemake.output[0], log=snakemake.log)
