# pw.x scaling study (docs/cluster.md): `snakemake scaling`.  Strong scaling of one displaced supercell and
# a weak-scaling supercell series, timed by pw.x's own WALL line.  Real pw.x: the mock has nothing to time.
from kappaflow.scaling import planned_runs

SCALING = config["scaling"]
SC = f"{R}/scaling"
SCALING_RUNS = planned_runs(SCALING, config["sow"]["supercell"])
SCALING_RANKS = {r["name"]: r["ranks"] for r in SCALING_RUNS}


rule scaling_inputs:
    input:
        structure=f"{R}/structure/unitcell.json",
        unitcell=config["unitcell"],
        template=config["supercell_template"],
    output:
        [f"{SC}/{r['name']}/pw.in" for r in SCALING_RUNS],
    log:
        f"{SC}/logs/inputs.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        runs=SCALING_RUNS,
        amplitude_ang=config["sow"]["amplitude_ang"],
        pw_overrides=pw_overrides_for_supercells(config["dft"]),
        out_dir=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),  # SC
    script:
        "../../scripts/scaling_inputs.py"


# One rank: no MPI launcher (a 1-task srun inside the job step would nest).  The cluster profile gives
# these rules their partition and CPUs per rank; the rank and GPU counts follow the wildcard.
rule scaling_run_mpi:
    input:
        f"{SC}/{{run}}/pw.in",
    output:
        f"{SC}/{{run}}/pw.out",
    log:
        f"{SC}/logs/{{run}}.log",
    wildcard_constraints:
        run="[a-z]+_[0-9x]+_r([2-9]|[1-9][0-9]+)",
    conda:
        "../../envs/dft.yaml"
    envmodules:
        *config["modules"]["pwx"],
    threads: lambda wc: SCALING_RANKS[wc.run]
    resources:
        tasks=lambda wc: SCALING_RANKS[wc.run],
        nodes=lambda wc: -(-SCALING_RANKS[wc.run] // SCALING["gpus_per_node"]),
        gres=lambda wc: f"gpu:{min(SCALING_RANKS[wc.run], SCALING['gpus_per_node'])}",
        tasks_per_gpu=1,
        mpi="srun",
    params:
        ranks=lambda wc: SCALING_RANKS[wc.run],
        scaling=SCALING,
    script:
        "../../scripts/scaling_run.py"


use rule scaling_run_mpi as scaling_run_serial with:
    wildcard_constraints:
        run="[a-z]+_[0-9x]+_r1",
    threads: 1
    resources:
        gres="gpu:1",
        tasks_per_gpu=1,


rule scaling_report:
    input:
        [f"{SC}/{r['name']}/pw.out" for r in SCALING_RUNS],
    output:
        table=f"{SC}/scaling.csv",
        strong=report(f"{SC}/strong_scaling.png", category="pw.x scaling"),
        weak=report(f"{SC}/weak_scaling.png", category="pw.x scaling"),
    log:
        f"{SC}/logs/report.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        runs=SCALING_RUNS,
        title=kfconfig.figure_title(config),
    script:
        "../../scripts/scaling_report.py"


rule scaling:
    input:
        f"{SC}/scaling.csv",
        f"{SC}/strong_scaling.png",
        f"{SC}/weak_scaling.png",
