"""Snakemake script: kappa(T) with phono3py (default) or ShengBTE, and kappa.provenance.json."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_bte

run(run_bte, snakemake.input.disp, snakemake.input.fc2, snakemake.input.fc3, snakemake.params.bte,
    snakemake.output.kappa, workdir=snakemake.params.workdir,
    shengbte_files={"fc2_shengbte": snakemake.input.fc2_shengbte,
                    "fc3_shengbte": snakemake.input.fc3_shengbte},
    provenance=dict(snakemake.params.provenance), modes_path=snakemake.output.get("modes"), log=snakemake.log)
