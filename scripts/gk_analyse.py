"""Snakemake script: HFACF, kappa(tau), first dip and cepstral kappa of one temperature (kappaflow.gk.steps)."""
from kappaflow.gk.steps import gk_analyse
from kappaflow.scriptutil import run

run(gk_analyse, list(snakemake.input), dict(snakemake.params.gk), snakemake.output.kappa, snakemake.output.hfacf,
    snakemake.output.kappa_tau, snakemake.output.convergence, log=snakemake.log)
