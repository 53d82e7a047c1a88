"""Snakemake script: one training data set (disp | disp_aimd) -> TFRecord shards."""
from kappaflow.ml.steps import pack
from kappaflow.scriptutil import run

run(pack, snakemake.input[0], snakemake.params.get("data") or snakemake.wildcards.data, snakemake.output[0],
    snakemake.params.elements_per_file, log=snakemake.log)
