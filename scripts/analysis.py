"""Snakemake script: where the heat is carried -- phono3py's mode file as tables and figures (kappaflow.analysis)."""
from kappaflow.analysis import run_analysis
from kappaflow.scriptutil import run

run(run_analysis, snakemake.input.modes, snakemake.input.kappa, dict(snakemake.params.analysis),
    dict(snakemake.output.items()), snakemake.params.title, log=snakemake.log)
