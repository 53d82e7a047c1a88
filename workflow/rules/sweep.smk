# Convergence sweep of κ(sweep.temperature_k) against the FC3 pair cutoff, the FC3 supercell and the
# q-mesh (docs/planning.md).  Target: `snakemake sweep`.  Each force point (supercell, cutoff) is a sow
# of its own (manifest under R/sweep/<point>/) writing into the shared store R/dft, so a smaller cutoff's
# supercells — a subset of a larger cutoff's at the same supercell — are pw.x runs the store already
# has: the rule `dft` runs every unique key once, whatever the number of points asking for it.
from kappaflow.plan import mem_mb_estimate
from kappaflow.sweep import point_sow_config, sweep_points

SWEEP = config["sweep"]
SWEEP_FORCE_POINTS, SWEEP_KAPPA_POINTS = sweep_points(config)
SW = f"{R}/sweep"


checkpoint sweep_sow:
    input:
        structure=f"{R}/structure/unitcell.json",
        template=config["supercell_template"],
    output:
        manifest=f"{SW}/{{point}}/manifest.json",
        disp=f"{SW}/{{point}}/phono3py_disp.yaml",
    log:
        f"{R}/logs/sweep/{{point}}_sow.log",
    wildcard_constraints:
        point="sc[^/]+",
    conda:
        "../../envs/phonons.yaml"
    # the store key holds pw.x's version, read by running the program once (kappaflow.engine): the same
    # modules as the pw.x jobs (or set dft.pw_version where pw.x cannot start on this rule's node)
    envmodules:
        *config["modules"]["pwx"],
    params:
        sow=lambda wc: point_sow_config(config["sow"], SWEEP_FORCE_POINTS[wc.point]),
        point=lambda wc: SWEEP_FORCE_POINTS[wc.point],
        store=f"{R}/dft",
        store_key=KEY_SCHEME,  # a new key scheme reruns the sow: old store entries are never reused
    script:
        "../../scripts/sweep_sow.py"


include: "sweep_functions.smk"


rule sweep_kappa:
    input:
        manifest=f"{SW}/{{point}}/manifest.json",
        disp=f"{SW}/{{point}}/phono3py_disp.yaml",
        outputs=sweep_dft_outputs,
    output:
        kappa=f"{SW}/{{point}}/{{mesh}}/kappa.csv",
        meta=f"{SW}/{{point}}/{{mesh}}/kappa.json",
        provenance=f"{SW}/{{point}}/{{mesh}}/kappa.provenance.json",
    log:
        f"{R}/logs/sweep/{{point}}_{{mesh}}.log",
    wildcard_constraints:
        point="sc[^/]+",
        mesh="q[0-9x]+",
    conda:
        "../../envs/phonons.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc: mem_mb_estimate(
            config,
            "sweep_kappa",
            supercell=SWEEP_FORCE_POINTS[wc.point]["supercell"],
            mesh=SWEEP_KAPPA_POINTS[f"{wc.point}/{wc.mesh}"]["mesh"],
        ),
    params:
        store=f"{R}/dft",
        reap=config["reap"],
        bte=config["bte"],
        mesh=lambda wc: SWEEP_KAPPA_POINTS[f"{wc.point}/{wc.mesh}"]["mesh"],
        temperature_k=SWEEP["temperature_k"],
        label=lambda wc: f"{wc.point}/{wc.mesh}",
        provenance={
            "unitcell": config["unitcell"],
            "supercell_template": config["supercell_template"],
            "structure": f"{R}/structure/unitcell.json",
        },
    script:
        "../../scripts/sweep_kappa.py"


rule sweep_summary:
    input:
        structure=f"{R}/structure/unitcell.json",
        kappa=[f"{SW}/{label}/kappa.json" for label in SWEEP_KAPPA_POINTS],
    output:
        table=f"{SW}/sweep_kappa.csv",
        summary=f"{SW}/sweep_summary.json",
        figure=f"{SW}/sweep_kappa.png",
    log:
        f"{R}/logs/sweep/summary.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        kappa_points=SWEEP_KAPPA_POINTS,
        force_points=SWEEP_FORCE_POINTS,
        tolerance=SWEEP["tolerance"],
        temperature_k=SWEEP["temperature_k"],
    script:
        "../../scripts/sweep_summary.py"


rule sweep:
    input:
        f"{SW}/sweep_summary.json",
        f"{SW}/sweep_kappa.png",
