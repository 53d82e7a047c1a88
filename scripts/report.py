"""Snakemake script: kappa(T) figures and the phonon dispersion."""
from kappaflow.report import make_report
from kappaflow.scriptutil import run

run(make_report, snakemake.input.kappa, snakemake.input.disp, snakemake.input.fc2,
    dict(snakemake.output.items()), snakemake.params.title, snakemake.params.band_points,
    log=snakemake.log)
