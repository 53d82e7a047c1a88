"""Snakemake script: one pw.x run (real or mock), validated, written atomically."""
from kappaflow.cluster import launch_command
from kappaflow.dft import check_pseudopotentials, run_dft
from kappaflow.scriptutil import run


def pw_job(pw_in, pw_out, dft_cfg, resources):
    # in a job with the `mpi` resource (the SLURM profile's pw.x jobs) the launch follows the job's resources
    dft_cfg = dict(dft_cfg, pw_command=launch_command(dft_cfg["pw_command"], resources))
    check_pseudopotentials(pw_in, dft_cfg["pw_command"], dft_cfg["check_pseudopotentials"])
    run_dft(pw_in, pw_out, dft_cfg)


run(pw_job, snakemake.input[0], snakemake.output[0], snakemake.config["dft"], snakemake.resources,
    log=snakemake.log)
