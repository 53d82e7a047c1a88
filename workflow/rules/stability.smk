# Stability gate (docs/provenance.md): FC2 from the single-displacement supercells only, phonons on the
# high-symmetry path and a mesh; imaginary modes below stability.tolerance_thz stop the run here with
# the dispersion figure (kept as stability/dispersion.unstable.png); stability.override: true records the
# instability and goes on.
# Ordering: a pair-displaced supercell's pw.x job is added to the DAG only once the pass marker of the
# current gate id exists (checkpoint stability_pass).  The id hashes the gate's force sets and settings,
# so a new structure or new settings wait for the gate again, while rule dft gets no file input from the
# gate: re-running or enabling the gate never reruns a finished pw.x job.
from kappaflow.stability import gate_id, gate_inputs, gated_keys
from kappaflow.steps import gate_settings

STABILITY = config["stability"]
GATE_SETTINGS = gate_settings(STABILITY, config["reap"])


def stability_gate_outputs(wildcards):
    sow_out = checkpoints.sow.get().output
    return gate_inputs(sow_out.manifest, sow_out.disp, f"{R}/dft")


checkpoint stability_gate:
    conda:
        "../../envs/phonons.yaml"
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        outputs=stability_gate_outputs,
    output:
        json=f"{R}/stability/stability.json",
        figure=report(f"{R}/stability/dispersion.png", category="Phonons",
                      caption="../report/dispersion.rst"),
        dos=f"{R}/stability/dos.csv",
    params:
        stability={k: v for k, v in STABILITY.items() if k != "enabled"},
        # the SCF accuracy check too: a run too inaccurate for the fit stops here, before the pair runs
        reap={k: config["reap"][k] for k in ("fc_calculator", "max_scf_correction_ev_per_ang")},
        store=f"{R}/dft",
        title=kfconfig.figure_title(config),
    log:
        f"{R}/logs/stability_gate.log",
    script:
        "../../scripts/stability_gate.py"


# reading one JSON and writing a marker: run by Snakemake itself, never a cluster submission
localrules:
    stability_pass,


checkpoint stability_pass:
    conda:
        "../../envs/phonons.yaml"
    input:
        json=f"{R}/stability/stability.json",
    output:
        f"{R}/stability/pass/{{gate}}.json",
    wildcard_constraints:
        gate="[0-9a-f]{16}",
    log:
        f"{R}/logs/stability_pass/{{gate}}.log",
    script:
        "../../scripts/stability_pass.py"


rule stability:
    input:
        f"{R}/stability/stability.json",


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
