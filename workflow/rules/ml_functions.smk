# Input functions of ml.smk (the workflow catalog's convention: functions apart from rules; snakemake --lint).


def aimd_md_output(wildcards):
    return f"{R}/dft/{md_key(checkpoints.aimd_plan.get().output[0])}/pw.out"


def snapshot_outputs(wildcards):
    if not MLCFG["aimd"]["enabled"]:
        return []
    snaps = checkpoints.aimd_snapshots.get().output[0]
    return [snaps] + [f"{R}/dft/{key}/pw.out" for key in snapshot_keys(snaps)]


def pack_of(wildcards):
    return f"{ML}/tfrecords/{wildcards.model.rpartition('-')[0]}"
