# Stability gate (docs/provenance.md): FC2 from the single-displacement supercells only, phonons on the
# high-symmetry path and a mesh; imaginary modes below stability.tolerance_thz stop the run here with
# the dispersion figure (kept as stability/dispersion.unstable.png).  Rule dft makes every
# pair-displaced supercell wait for stability.json, so none of those pw.x jobs starts on an unstable
# structure; stability.override: true records the instability and goes on.
from snakemake.io import _IOFile

from kappaflow.stability import gate_inputs, gated_keys

STABILITY = config["stability"]


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
        reap={"fc_calculator": config["reap"]["fc_calculator"]},
        store=f"{R}/dft",
        title=config.get("description", config["name"]),
    log:
        f"{R}/logs/stability_gate.log",
    script:
        "../../scripts/stability_gate.py"


rule stability:
    input:
        f"{R}/stability/stability.json",


STABILITY_JSON = f"{R}/stability/stability.json"


def stability_gate_for_key(wildcards):
    """Rule dft's extra input: the gate's JSON for a pair-displaced supercell, nothing otherwise.

    ancient(): a gate that reruns (new sow, other tolerance) and passes does not rerun finished pw.x
    jobs.  A pw.out finished without the gate in its recorded inputs (results from before the gate)
    keeps the inputs it was made from, so Snakemake's input-set trigger does not rerun it either."""
    if not STABILITY["enabled"]:
        return []
    # The gate is a checkpoint and pair jobs ask for it through checkpoints.stability_gate.get(): with a
    # plain file input on the gate's JSON (a job that itself waits for the sow checkpoint), Snakemake
    # dropped reap and the new pw.x jobs after a re-run sow (larger cutoff) and computed kappa from stale
    # force constants (tests/test_pipeline_mock.py::test_larger_cutoff_runs_only_new_supercells).
    # The sow's files are read directly: a dft job only exists once some consumer read its key from
    # this manifest, so the file on disk is the current one.
    manifest, disp = f"{R}/sow/manifest.json", f"{R}/sow/phono3py_disp.yaml"
    if not (os.path.exists(manifest) and os.path.exists(disp)):
        return []
    if wildcards.key not in gated_keys(manifest, disp):
        return []
    checkpoints.stability_gate.get()  # pair jobs are added once the gate has passed
    done = f"{R}/dft/{wildcards.key}/pw.out"
    if os.path.exists(done):
        try:
            recorded = workflow.persistence.input(_IOFile(done, None))
        except Exception:  # no persistence (e.g. linting): treat as recorded without the gate
            recorded = None
        if not recorded or STABILITY_JSON not in recorded:
            return []
    return ancient(STABILITY_JSON)
