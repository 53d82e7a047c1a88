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


include: "stability_functions.smk"


checkpoint stability_gate:
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        outputs=stability_gate_outputs,
    output:
        json=f"{R}/stability/stability.json",
        figure=report(f"{R}/stability/dispersion.png", category="Phonons", caption="../report/dispersion.rst"),
        dos=f"{R}/stability/dos.csv",
    log:
        f"{R}/logs/stability_gate.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        stability={k: v for k, v in STABILITY.items() if k != "enabled"},
        # the SCF accuracy check too: a run too inaccurate for the fit stops here, before the pair runs
        reap={k: config["reap"][k] for k in ("fc_calculator", "max_scf_correction_ev_per_ang")},
        store=f"{R}/dft",
        title=kfconfig.figure_title(config),
    script:
        "../../scripts/stability_gate.py"


# reading one JSON and writing a marker: run by Snakemake itself, never a cluster submission
localrules:
    stability_pass,


checkpoint stability_pass:
    input:
        json=f"{R}/stability/stability.json",
    output:
        f"{R}/stability/pass/{{gate}}.json",
    log:
        f"{R}/logs/stability_pass/{{gate}}.log",
    wildcard_constraints:
        gate="[0-9a-f]{16}",
    conda:
        "../../envs/phonons.yaml"
    script:
        "../../scripts/stability_pass.py"


rule stability:
    input:
        f"{R}/stability/stability.json",
