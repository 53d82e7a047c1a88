"""Snakemake script: the pw.x inputs of the scaling study."""
from kappaflow.scaling import step_inputs
from kappaflow.scriptutil import run

p = snakemake.params
run(step_inputs, snakemake.input.structure, snakemake.input.unitcell, snakemake.input.template,
    p.amplitude_ang, p.pw_overrides, p.runs, p.out_dir, log=snakemake.log)
