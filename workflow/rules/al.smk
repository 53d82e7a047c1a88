# Query-by-Committee active learning (docs/ml.md, "Active learning"): `snakemake al`.
# pool -> round 0 seed -> dft (the ordinary pw.x jobs) -> dataset -> gvectors -> pack -> train (one job
# per member) -> infer (sow supercells) + predict (pool) -> inject/reap/bte (kappa of the round) ->
# al_select of the next round (a checkpoint: stop or a batch) -> ... -> final kappa, summary, figures.
from kappaflow.al.loop import final_dft_keys, is_stop, selected_outputs

ALCFG = config["ml"]["al"]
AL = f"{R}/al"
AL_MEMBERS = list(range(config["ml"]["train"]["committee_size"]))


def al_selected_upto(last):
    """selected.json of rounds 0..last (each known once its checkpoint ran)."""
    return [str(checkpoints.al_select.get(round=i).output[0]) for i in range(int(last) + 1)]


def al_outputs_upto(last):
    return selected_outputs(al_selected_upto(last), f"{R}/dft", ALCFG["on_failure"])


def al_md_pools_upto(last):
    """The committee-MD pools of rounds 0..last (ml.al.pool_temperatures_k; none when it is empty)."""
    return [f"{AL}/round{i}/md/pool.json" for i in range(int(last) + 1)] if ALCFG["pool_temperatures_k"] else []


def al_pools_upto(last):
    """pool.json and the MD pools of rounds 0..last: the candidates a selection after round ``last`` sees."""
    return [f"{AL}/pool.json"] + al_md_pools_upto(last)


def al_stop_round():
    """The round whose selection said stop (walks the checkpoints one round at a time)."""
    r = 0
    while not is_stop(checkpoints.al_select.get(round=r).output[0]):
        r += 1
    return r


def al_select_inputs(wildcards):
    r = int(wildcards.round)
    if r == 0:
        return []
    files = al_selected_upto(r - 1) + al_outputs_upto(r - 1)
    files += [f"{AL}/round{r - 1}/predict/scores.csv"]
    files += [f"{AL}/round{i}/bte/kappa.csv" for i in range(max(0, r - 2), r)]
    return files + ([ALCFG["tolerance_file"]] if ALCFG["tolerance_file"] else [])


rule al_pool:
    conda:
        "../../envs/ml.yaml"
    # the store key holds pw.x's version (kappaflow.engine): the same modules as the pw.x jobs
    envmodules:
        *config["modules"]["pwx"],
    input:
        # ml.al.pool_aimd: the ML route's AIMD snapshots (after its pw.x md run, ml.aimd) join the pool
        unpack(lambda wc: {"aimd_snapshots": f"{R}/aimd/snapshots.json"} if ALCFG["pool_aimd"] else {}),
        structure=f"{R}/structure/unitcell.json",
        template=config["supercell_template"],
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
    output:
        f"{AL}/pool.json",
    params:
        sow=config["sow"],
        dft=config["dft"],
        al=ALCFG,
        stability=config["stability"]["enabled"],
        store=f"{R}/dft",
    log:
        f"{AL}/logs/pool.log",
    script:
        "../../scripts/al_pool.py"


# reading a few JSON/CSV files and solving a small integer program: run by Snakemake itself, no submission
localrules:
    al_select,


checkpoint al_select:
    conda:
        "../../envs/ml.yaml"
    input:
        pool=lambda wc: al_pools_upto(int(wc.round) - 1),
        previous=al_select_inputs,
    output:
        f"{AL}/round{{round}}/selected.json",
    params:
        previous=lambda wc: al_selected_upto(int(wc.round) - 1) if int(wc.round) else [],
        scores=lambda wc: f"{AL}/round{int(wc.round) - 1}/predict/scores.csv" if int(wc.round) else None,
        kappas=lambda wc: [f"{AL}/round{i}/bte/kappa.csv" for i in range(max(0, int(wc.round) - 2), int(wc.round))],
        store=f"{R}/dft",
        al=ALCFG,
        dft=config["dft"],
        cost_reference=config["plan"]["cost_reference"],
        template=config["supercell_template"],
        structure=f"{R}/structure/unitcell.json",
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/select_{{round}}.log",
    script:
        "../../scripts/al_select.py"


def al_baseline(wildcards):
    """The round's Δ-learning baseline (ml.al.baseline: fc), or nothing."""
    return {"baseline": f"{AL}/round{wildcards.round}/baseline/baseline.npz"} if ALCFG["baseline"] == "fc" else {}


rule al_baseline:
    conda:
        "../../envs/ml.yaml"
    input:
        selected=lambda wc: al_selected_upto(wc.round),
        outputs=lambda wc: al_outputs_upto(wc.round),
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
    output:
        baseline=f"{AL}/round{{round}}/baseline/baseline.npz",
        report=f"{AL}/round{{round}}/baseline/baseline.json",
    params:
        store=f"{R}/dft",
        on_failure=ALCFG["on_failure"],
        max_displacement_ang=ALCFG["baseline_max_displacement_ang"],
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/baseline_{{round}}.log",
    script:
        "../../scripts/al_baseline.py"


rule al_dataset:
    conda:
        "../../envs/ml.yaml"
    input:
        unpack(al_baseline),
        selected=lambda wc: al_selected_upto(wc.round),
        outputs=lambda wc: al_outputs_upto(wc.round),
    output:
        examples=directory(f"{AL}/round{{round}}/dataset/examples"),
        extxyz=f"{AL}/round{{round}}/dataset/dataset.extxyz",
        index=f"{AL}/round{{round}}/dataset/index.json",
    params:
        store=f"{R}/dft",
        on_failure=ALCFG["on_failure"],
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/dataset_{{round}}.log",
    script:
        "../../scripts/al_dataset.py"


rule al_gvectors:
    conda:
        "../../envs/ml.yaml"
    input:
        index=f"{AL}/round{{round}}/dataset/index.json",
        examples=f"{AL}/round{{round}}/dataset/examples",
        structure=f"{R}/structure/unitcell.json",
    output:
        f"{AL}/round{{round}}/gvectors.npz",
    params:
        descriptors=config["ml"]["descriptors"],
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/gvectors_{{round}}.log",
    script:
        "../../scripts/ml_gvectors.py"


rule al_pack:
    conda:
        "../../envs/ml.yaml"
    input:
        f"{AL}/round{{round}}/gvectors.npz",
    output:
        directory(f"{AL}/round{{round}}/tfrecords"),
    params:
        data="disp",
        elements_per_file=config["ml"]["train"]["elements_per_file"],
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/pack_{{round}}.log",
    script:
        "../../scripts/ml_pack.py"


rule al_train:
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    input:
        pack=f"{AL}/round{{round}}/tfrecords",
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
    output:
        model=f"{AL}/round{{round}}/models/member{{member}}/model.npz",
        meta=f"{AL}/round{{round}}/models/member{{member}}/model.json",
        metrics=f"{AL}/round{{round}}/models/member{{member}}/metrics.csv",
    params:
        train={k: v for k, v in config["ml"]["train"].items() if k not in ("data", "validation_fraction")},
        model=lambda wc: f"al-round{wc.round}",
        validation_fraction=0.0,  # every pw.x run of the loop trains; held out: the next batch
        out_dir=lambda wc: f"{AL}/round{wc.round}/models/member{wc.member}",
    wildcard_constraints:
        round="[0-9]+",
        member="[0-9]+",
    threads: 2
    resources:
        ml_train=1,
    log:
        f"{AL}/logs/train_{{round}}_{{member}}.log",
    script:
        "../../scripts/ml_train.py"


def al_models(wildcards):
    return expand(f"{AL}/round{wildcards.round}/models/member{{member}}/model.npz", member=AL_MEMBERS)


rule al_infer:
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    input:
        unpack(al_baseline),
        models=al_models,
        manifest=f"{R}/sow/manifest.json",
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
    output:
        forces=f"{AL}/round{{round}}/infer/forces.dat",
        sigma=f"{AL}/round{{round}}/infer/sigma.dat",
        timing=f"{AL}/round{{round}}/infer/timing.json",
    params:
        store=f"{R}/dft",
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/infer_{{round}}.log",
    script:
        "../../scripts/ml_infer.py"


rule al_predict:
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    input:
        unpack(al_baseline),
        models=al_models,
        pool=lambda wc: al_pools_upto(wc.round),
        manifest=f"{R}/sow/manifest.json",
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
        index=f"{AL}/round{{round}}/dataset/index.json",
    output:
        f"{AL}/round{{round}}/predict/scores.csv",
    params:
        store=f"{R}/dft",
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/predict_{{round}}.log",
    script:
        "../../scripts/al_predict.py"


rule al_md:
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
        # each snapshot's store key holds pw.x's version, read by running the program once (kappaflow.engine):
        # the pw.x modules too (or set dft.pw_version where pw.x cannot start on this rule's node)
        *config["modules"]["pwx"],
    input:
        unpack(al_baseline),
        models=al_models,
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
        structure=f"{R}/structure/unitcell.json",
        template=config["supercell_template"],
    output:
        f"{AL}/round{{round}}/md/pool.json",
    params:
        sow=config["sow"],
        dft=config["dft"],
        al=ALCFG,
        store=f"{R}/dft",
    wildcard_constraints:
        round="[0-9]+",
    log:
        f"{AL}/logs/md_{{round}}.log",
    script:
        "../../scripts/al_md.py"


def al_stage_round(stage):
    """The committee round whose forces a stage uses: round<r> itself; final: the round before the stop."""
    return int(stage[5:]) if stage.startswith("round") else al_stop_round() - 1


def al_inject_inputs(wildcards):
    r = al_stage_round(wildcards.stage)
    files = {"forces": f"{AL}/round{r}/infer/forces.dat", "selected": al_selected_upto(r + (wildcards.stage == "final"))}
    if wildcards.stage == "final" and ALCFG["gate"] == "dft":
        files["scores"] = f"{AL}/round{r}/predict/scores.csv"
        files["gated"] = [f"{R}/dft/{k}/pw.out" for k in final_dft_keys(
            f"{AL}/round{r}/predict/scores.csv", ALCFG)]
    return files


rule al_inject:
    conda:
        "../../envs/ml.yaml"
    input:
        unpack(al_inject_inputs),
        manifest=f"{R}/sow/manifest.json",
    output:
        directory(f"{AL}/{{stage}}/store"),
    params:
        store=f"{R}/dft",
        al=ALCFG,
    wildcard_constraints:
        stage="round[0-9]+|final",
    log:
        f"{AL}/logs/inject_{{stage}}.log",
    script:
        "../../scripts/al_inject.py"


rule al_reap:
    conda:
        "../../envs/phonons.yaml"
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        store=f"{AL}/{{stage}}/store",
    output:
        fc2=f"{AL}/{{stage}}/fc/fc2.hdf5",
        fc3=f"{AL}/{{stage}}/fc/fc3.hdf5",
        fc2_shengbte=f"{AL}/{{stage}}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{AL}/{{stage}}/fc/FORCE_CONSTANTS_3RD",
    params:
        reap=config["reap"],
        store=lambda wc: f"{AL}/{wc.stage}/store",
    wildcard_constraints:
        stage="round[0-9]+|final",
    resources:
        mem_mb=lambda wc: mem_mb_estimate(config, "reap"),
    log:
        f"{AL}/logs/reap_{{stage}}.log",
    script:
        "../../scripts/reap.py"


rule al_bte:
    conda:
        "../../envs/phonons.yaml"
    input:
        disp=f"{R}/sow/phono3py_disp.yaml",
        fc2=f"{AL}/{{stage}}/fc/fc2.hdf5",
        fc3=f"{AL}/{{stage}}/fc/fc3.hdf5",
        fc2_shengbte=f"{AL}/{{stage}}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{AL}/{{stage}}/fc/FORCE_CONSTANTS_3RD",
        # the committee named in the provenance: an input, because the final stage's round is known from
        # a checkpoint, and a job that runs on a node (a group job) may read a checkpoint only through
        # its inputs
        models=lambda wc: expand(f"{AL}/round{al_stage_round(wc.stage)}/models/member{{m}}/model.npz", m=AL_MEMBERS),
    output:
        kappa=f"{AL}/{{stage}}/bte/kappa.csv",
        provenance=f"{AL}/{{stage}}/bte/kappa.provenance.json",
    params:
        bte=config["bte"],
        workdir=lambda wc: f"{AL}/{wc.stage}/bte/shengbte",
        provenance=lambda wc, input: {
            "route": "al",
            "manifest": f"{R}/sow/manifest.json",
            "disp_yaml": f"{R}/sow/phono3py_disp.yaml",
            "store": f"{R}/dft",
            "force_store": f"{AL}/{wc.stage}/store",
            "reap": config["reap"],
            "sow_config": config["sow"],
            "unitcell": config["unitcell"],
            "supercell_template": config["supercell_template"],
            "structure": f"{R}/structure/unitcell.json",
            "models": list(input.models),
            "ml": {"route": "active learning", "inject_mode": "hybrid",
                   "inject_provenance": f"{AL}/{wc.stage}/store/provenance.json",
                   "train": config["ml"]["train"], "descriptors": config["ml"]["descriptors"], "al": ALCFG},
        },
    wildcard_constraints:
        stage="round[0-9]+|final",
    threads: 2
    resources:
        mem_mb=lambda wc: mem_mb_estimate(config, "bte"),
    log:
        f"{AL}/logs/bte_{{stage}}.log",
    script:
        "../../scripts/bte.py"


def al_report_inputs(wildcards):
    s = al_stop_round()
    return {
        "selected": al_selected_upto(s),
        "kappas": [f"{AL}/round{r}/bte/kappa.csv" for r in range(s)],
        "scores": [f"{AL}/round{r}/predict/scores.csv" for r in range(s)],
        "metrics": [f"{AL}/round{r}/models/member{m}/metrics.csv" for r in range(s) for m in AL_MEMBERS],
        "final_kappa": f"{AL}/final/bte/kappa.csv",
        "final_store": f"{AL}/final/store",
        "outputs": al_outputs_upto(s),
        "baselines": [f"{AL}/round{r}/baseline/baseline.npz" for r in range(s)] if ALCFG["baseline"] == "fc" else [],
    }


rule al_report:
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    input:
        unpack(al_report_inputs),
        pool=lambda wc: al_pools_upto(al_stop_round() - 1),
    output:
        summary=f"{AL}/final/summary.json",
        rounds=report(f"{AL}/final/rounds.csv", category="Active learning", caption="../report/al.rst"),
        heldout=report(f"{AL}/final/heldout.csv", category="Active learning", caption="../report/al.rst"),
        kappa=report(f"{AL}/final/kappa_per_round.png", category="Active learning", caption="../report/al.rst"),
        kappa_error=report(f"{AL}/final/kappa_error_vs_runs.png", category="Active learning",
                           caption="../report/al.rst"),
        rmse=report(f"{AL}/final/heldout_rmse.png", category="Active learning", caption="../report/al.rst"),
        disagreement=report(f"{AL}/final/disagreement_vs_force.png", category="Active learning",
                            caption="../report/al.rst"),
    params:
        al_dir=AL,
        store=f"{R}/dft",
        members=AL_MEMBERS,
        al=ALCFG,
        reference=f"{R}/bte/kappa.csv",  # read when the DFT route has run (never made by `al`)
        title=kfconfig.figure_title(config),
    log:
        f"{AL}/logs/report.log",
    script:
        "../../scripts/al_report.py"


rule al:
    input:
        f"{AL}/final/summary.json",
        f"{AL}/final/kappa_per_round.png",
