"""Snakemake script: train one committee member (seed = ml.train.seed + member)."""
from kappaflow.ml.steps import train_member
from kappaflow.scriptutil import run

run(train_member, snakemake.input.pack, snakemake.input.gvectors, snakemake.params.train,
    snakemake.params.get("model") or snakemake.wildcards.model, int(snakemake.wildcards.member),
    snakemake.params.out_dir, snakemake.params.get("validation_fraction"), log=snakemake.log)
