# Input functions of stability.smk (the workflow catalog's convention: functions apart from rules; snakemake --lint).


def stability_gate_outputs(wildcards):
    sow_out = checkpoints.sow.get().output
    return gate_inputs(sow_out.manifest, sow_out.disp, f"{R}/dft")


def stability_gate_for_key(wildcards):
    """Rule dft's gate for a pair-displaced supercell: no file, but the job exists only once the current
    gate id has passed (checkpoints.stability_pass.get() raises until its marker is made).

    The sow's files are read directly: a dft job only exists once some consumer read its key from this
    manifest, so the file on disk is the current one."""
    if not STABILITY["enabled"]:
        return []
    manifest, disp = f"{R}/sow/manifest.json", f"{R}/sow/phono3py_disp.yaml"
    if not (os.path.exists(manifest) and os.path.exists(disp)):
        return []
    if wildcards.key not in gated_keys(manifest, disp):
        return []
    checkpoints.stability_pass.get(gate=gate_id(manifest, disp, GATE_SETTINGS))
    return []
