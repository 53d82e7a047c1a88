# The Green-Kubo route (docs/green_kubo.md): NVT thermalisation -> n NVE trajectories with the heat flux
# (one job each) -> HFACF, kappa(tau), first dip (+ sportran's cepstral kappa) -> GK vs BTE table and figure.
#   snakemake gk --configfile config/mock/si_gk.yaml
from kappaflow.gk.steps import analysis_params as gk_analysis_params
from kappaflow.gk.steps import cell_label as gk_cell_label
from kappaflow.gk.steps import md_params as gk_md_params
from kappaflow.gk.steps import resolve_settings as gk_resolve_settings
from kappaflow.gk.steps import size_cells as gk_size_cells

GKCFG = gk_resolve_settings(config["gk"])
GK = f"{R}/gk"
GK_TEMPS = [f"{float(t):g}" for t in GKCFG["temperatures_k"]]
GK_TRAJS = list(range(int(GKCFG["n_trajectories"])))
# the cell-size study (gk.cell_sizes): every cell but the main run's gk.supercell runs under GK/size/<cell>/
GK_MAIN_CELL = gk_cell_label(GKCFG["supercell"])
GK_SIZE_RUNS = [(c, T) for c in gk_size_cells(GKCFG) for T in GK_TEMPS]
GK_SIZE_KAPPA = [
    f"{GK}/T{T}/kappa.json" if c == GK_MAIN_CELL else f"{GK}/size/{c}/T{T}/kappa.json" for c, T in GK_SIZE_RUNS
]


include: "gk_functions.smk"


# the results of the same potential's BTE route: the DFT route's for sw, the ML route's committee for committee
GK_SAME_POTENTIAL = R if GKCFG["potential"] == "sw" else f"{ML}/{MAIN_MODEL}"


rule gk_starts:
    input:
        structure=f"{R}/structure/unitcell.json",
        models=gk_models,
    output:
        f"{GK}/T{{T}}/starts.npz",
    log:
        f"{GK}/logs/starts_{{T}}.log",
    wildcard_constraints:
        T="[0-9.]+",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    params:
        gk=gk_md_params(GKCFG),
    script:
        "../../scripts/gk_starts.py"


rule gk_trajectory:
    input:
        starts=f"{GK}/T{{T}}/starts.npz",
        models=gk_models,
    output:
        f"{GK}/T{{T}}/traj{{k}}.npz",
    log:
        f"{GK}/logs/traj_{{T}}_{{k}}.log",
    wildcard_constraints:
        T="[0-9.]+",
        k="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    resources:
        gk_md=1,
    params:
        gk=gk_md_params(GKCFG),
        # the running trajectory's checkpoint: not an output, so a killed job's segments survive the rerun
        checkpoint=lambda wc: f"{GK}/T{wc.T}/checkpoints/traj{wc.k}.npz",
    script:
        "../../scripts/gk_trajectory.py"


rule gk_analyse:
    input:
        expand(f"{GK}/T{{{{T}}}}/traj{{k}}.npz", k=GK_TRAJS),
    output:
        kappa=f"{GK}/T{{T}}/kappa.json",
        hfacf=report(f"{GK}/T{{T}}/hfacf.png", caption="../report/gk_hfacf.rst", category="Green-Kubo"),
        kappa_tau=report(f"{GK}/T{{T}}/kappa_tau.png", caption="../report/gk_kappa_tau.rst", category="Green-Kubo"),
        convergence=report(
            f"{GK}/T{{T}}/convergence.png", caption="../report/gk_convergence.rst", category="Green-Kubo"
        ),
    log:
        f"{GK}/logs/analyse_{{T}}.log",
    wildcard_constraints:
        T="[0-9.]+",
    conda:
        "../../envs/ml.yaml"
    params:
        gk=gk_analysis_params(GKCFG),
    script:
        "../../scripts/gk_analyse.py"


rule gk_bte_classical:
    input:
        fc2=f"{GK_SAME_POTENTIAL}/fc/fc2.hdf5",
        fc3=f"{GK_SAME_POTENTIAL}/fc/fc3.hdf5",
        disp=f"{R}/sow/phono3py_disp.yaml",
    output:
        f"{GK}/bte_classical.csv",
    log:
        f"{GK}/logs/bte_classical.log",
    conda:
        "../../envs/ml.yaml"
    params:
        bte=config["bte"],
        temperatures_k=GKCFG["temperatures_k"],
    script:
        "../../scripts/gk_bte_classical.py"


rule gk_report:
    input:
        kappa=expand(f"{GK}/T{{T}}/kappa.json", T=GK_TEMPS),
        bte=gk_bte_kappa,
        bte_classical=lambda wc: [f"{GK}/bte_classical.csv"] if GKCFG["compare_bte"] else [],
    output:
        table=f"{GK}/kappa_gk.csv",
        figure=report(f"{GK}/kappa_gk_vs_bte.png", caption="../report/gk_vs_bte.rst", category="Green-Kubo"),
    log:
        f"{GK}/logs/report.log",
    conda:
        "../../envs/ml.yaml"
    script:
        "../../scripts/gk_report.py"


# the cell-size study: the rules above, for the cell in the path instead of gk.supercell


use rule gk_starts as gk_size_starts with:
    output:
        f"{GK}/size/{{cell}}/T{{T}}/starts.npz",
    log:
        f"{GK}/logs/size_{{cell}}_starts_{{T}}.log",
    wildcard_constraints:
        cell="[0-9]+x[0-9]+x[0-9]+",
        T="[0-9.]+",
    params:
        gk=lambda wc: gk_md_params(GKCFG, supercell=wc.cell),


use rule gk_trajectory as gk_size_trajectory with:
    input:
        starts=f"{GK}/size/{{cell}}/T{{T}}/starts.npz",
        models=gk_models,
    output:
        f"{GK}/size/{{cell}}/T{{T}}/traj{{k}}.npz",
    log:
        f"{GK}/logs/size_{{cell}}_traj_{{T}}_{{k}}.log",
    wildcard_constraints:
        cell="[0-9]+x[0-9]+x[0-9]+",
        T="[0-9.]+",
        k="[0-9]+",
    params:
        gk=lambda wc: gk_md_params(GKCFG, supercell=wc.cell),
        checkpoint=lambda wc: f"{GK}/size/{wc.cell}/T{wc.T}/checkpoints/traj{wc.k}.npz",


use rule gk_analyse as gk_size_analyse with:
    input:
        expand(f"{GK}/size/{{{{cell}}}}/T{{{{T}}}}/traj{{k}}.npz", k=GK_TRAJS),
    output:
        kappa=f"{GK}/size/{{cell}}/T{{T}}/kappa.json",
        hfacf=f"{GK}/size/{{cell}}/T{{T}}/hfacf.png",
        kappa_tau=f"{GK}/size/{{cell}}/T{{T}}/kappa_tau.png",
        convergence=f"{GK}/size/{{cell}}/T{{T}}/convergence.png",
    log:
        f"{GK}/logs/size_{{cell}}_analyse_{{T}}.log",
    wildcard_constraints:
        cell="[0-9]+x[0-9]+x[0-9]+",
        T="[0-9.]+",


rule gk_size_report:
    input:
        kappa=GK_SIZE_KAPPA,
        bte=gk_bte_kappa,
    output:
        table=f"{GK}/size/kappa_vs_cell.csv",
        figure=report(f"{GK}/size/kappa_vs_cell.png", caption="../report/gk_size.rst", category="Green-Kubo"),
    log:
        f"{GK}/logs/size_report.log",
    conda:
        "../../envs/ml.yaml"
    params:
        cells=[c for c, _ in GK_SIZE_RUNS],
    script:
        "../../scripts/gk_size_report.py"


rule gk_size:
    input:
        f"{GK}/size/kappa_vs_cell.csv",
        f"{GK}/size/kappa_vs_cell.png",


rule gk:
    input:
        f"{GK}/kappa_gk.csv",
        f"{GK}/kappa_gk_vs_bte.png",
        rules.gk_size.input if GK_SIZE_RUNS else [],
