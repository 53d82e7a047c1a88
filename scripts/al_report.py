"""Snakemake script: per-round table, held-out errors, summary and figures of the active-learning loop."""
from kappaflow.al.report import al_report
from kappaflow.scriptutil import run

run(al_report, snakemake.params.al_dir, snakemake.params.store, list(snakemake.input.selected),
    list(snakemake.input.kappas), list(snakemake.input.scores), snakemake.input.final_kappa,
    snakemake.input.final_store, snakemake.input.pool, dict(snakemake.params.al), list(snakemake.params.members),
    dict(snakemake.output.items()), snakemake.params.reference, snakemake.params.title, log=snakemake.log)
