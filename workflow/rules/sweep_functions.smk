# Input functions of sweep.smk (the workflow catalog's convention: functions apart from rules; snakemake --lint).


def sweep_dft_outputs(wildcards):
    """The pw.x outputs of one force point (known once its sow has run); shared with every other point."""
    manifest = checkpoints.sweep_sow.get(point=wildcards.point).output.manifest
    return [f"{R}/dft/{key}/pw.out" for key in manifest_keys(manifest)] + imported_outputs(manifest)
