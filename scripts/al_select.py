"""Snakemake script: one round's batch (round 0: the random seed) or the decision to stop."""
from kappaflow.al.loop import select_round_from_config
from kappaflow.scriptutil import run

run(select_round_from_config, int(snakemake.wildcards.round), snakemake.input.pool, list(snakemake.params.previous),
    snakemake.params.store, dict(snakemake.params.al), dict(snakemake.params.dft), snakemake.params.cost_reference,
    snakemake.params.template, snakemake.params.structure, snakemake.output[0], snakemake.params.scores,
    list(snakemake.params.kappas), log=snakemake.log)
