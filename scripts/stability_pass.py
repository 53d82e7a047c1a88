"""Snakemake script: the pass marker of the current gate id (pair-displaced pw.x jobs wait for it)."""
from kappaflow.scriptutil import run
from kappaflow.stability import write_pass_marker

run(write_pass_marker, snakemake.input.json, snakemake.wildcards.gate, snakemake.output[0], log=snakemake.log)
