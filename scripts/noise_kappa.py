"""Snakemake script: kappa with noisy (or ML) forces on the displaced supercells, no pw.x; writes
kappa.csv, kappa.json and kappa.provenance.json."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_noise_job

cfg = snakemake.config
results = f"{cfg['results_dir']}/{cfg['name']}"
amplitude = float(getattr(snakemake.params, "amplitude", 0.0) or 0.0)
seed = int(getattr(snakemake.wildcards, "seed", 0))
ml = snakemake.input.forces if hasattr(snakemake.input, "forces") else None
provenance = {"unitcell": cfg["unitcell"], "supercell_template": cfg["supercell_template"],
              "structure": f"{results}/structure/unitcell.json", "sow_config": cfg["sow"]}
if ml:
    model = snakemake.wildcards.model
    members = range(cfg["ml"]["train"]["committee_size"])
    provenance["models"] = [f"{results}/ml/models/{model}/member{m}/model.npz" for m in members]
    provenance["ml"] = {"model": model}
run(run_noise_job, snakemake.input.manifest, snakemake.input.disp, snakemake.params.store,
    snakemake.params.reap, snakemake.params.bte, snakemake.params.mesh, amplitude, seed,
    snakemake.output.kappa, ml_forces_path=ml, provenance=provenance, log=snakemake.log)
