"""Snakemake script: the Δ-learning baseline of a round (symfc FC2 + FC3 of the loop's runs so far)."""
from kappaflow.al.loop import fit_round_baseline
from kappaflow.scriptutil import run

run(fit_round_baseline, snakemake.input.manifest, snakemake.input.disp, snakemake.params.store,
    list(snakemake.input.selected), snakemake.params.on_failure, snakemake.output.baseline,
    snakemake.output.report, snakemake.params.max_displacement_ang, log=snakemake.log)
