"""Snakemake script: committee forces (mean + spread) on every displaced supercell."""
from pathlib import Path

from kappaflow.ml.steps import infer
from kappaflow.scriptutil import run

run(infer, [Path(p).parent for p in snakemake.input.models], snakemake.input.manifest,
    snakemake.params.store, snakemake.input.gvectors, snakemake.output.forces, snakemake.output.sigma,
    snakemake.output.timing, snakemake.input.get("baseline"), log=snakemake.log)
