"""Snakemake script (checkpoint): one sweep point's sow into the shared DFT store, with a cutoff warning."""
from kappaflow.scriptutil import run
from kappaflow.sweep import run_sweep_sow

run(run_sweep_sow, snakemake.input.structure, snakemake.input.template, snakemake.params.sow,
    dict(snakemake.config["dft"]), snakemake.params.store, snakemake.output.manifest, snakemake.output.disp,
    log=snakemake.log)
