"""Snakemake script: PANNA mBP G-vectors and sparse dG/dR of every example (float64 .npz)."""
from kappaflow.ml.steps import compute_gvectors, species_of
from kappaflow.scriptutil import run

run(compute_gvectors, snakemake.input.index, snakemake.input.examples, snakemake.params.descriptors,
    species_of(snakemake.input.structure), snakemake.output[0], log=snakemake.log)
