# Query-by-Committee active learning (docs/ml.md, "Active learning"): `snakemake al`.
# pool -> round 0 seed -> dft (the ordinary pw.x jobs) -> dataset -> gvectors -> pack -> train (one job
# per member) -> infer (sow supercells) + predict (pool) -> inject/reap/bte (kappa of the round) ->
# al_select of the next round (a checkpoint: stop or a batch) -> ... -> final kappa, summary, figures.
from kappaflow.al.loop import final_dft_keys, is_stop, selected_outputs

ALCFG = config["ml"]["al"]
AL = f"{R}/al"
AL_MEMBERS = list(range(config["ml"]["train"]["committee_size"]))


include: "al_functions.smk"


rule al_pool:
    input:
        # ml.al.pool_aimd: the ML route's AIMD snapshots (after its pw.x md run, ml.aimd) join the pool
        unpack(lambda wc: {"aimd_snapshots": f"{R}/aimd/snapshots.json"} if ALCFG["pool_aimd"] else {}),
        structure=f"{R}/structure/unitcell.json",
        template=config["supercell_template"],
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
    output:
        f"{AL}/pool.json",
    log:
        f"{AL}/logs/pool.log",
    conda:
        "../../envs/ml.yaml"
    # the store key holds pw.x's version (kappaflow.engine): the same modules as the pw.x jobs
    envmodules:
        *config["modules"]["pwx"],
    params:
        sow=config["sow"],
        dft=config["dft"],
        al=ALCFG,
        stability=config["stability"]["enabled"],
        store=f"{R}/dft",
    script:
        "../../scripts/al_pool.py"


# reading a few JSON/CSV files and solving a small integer program: run by Snakemake itself, no submission
localrules:
    al_select,


checkpoint al_select:
    input:
        pool=lambda wc: al_pools_upto(int(wc.round) - 1),
        previous=al_select_inputs,
    output:
        f"{AL}/round{{round}}/selected.json",
    log:
        f"{AL}/logs/select_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
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
    script:
        "../../scripts/al_select.py"


rule al_baseline:
    input:
        selected=lambda wc: al_selected_upto(wc.round),
        outputs=lambda wc: al_outputs_upto(wc.round),
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
    output:
        baseline=f"{AL}/round{{round}}/baseline/baseline.npz",
        report=f"{AL}/round{{round}}/baseline/baseline.json",
    log:
        f"{AL}/logs/baseline_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    params:
        store=f"{R}/dft",
        on_failure=ALCFG["on_failure"],
        max_displacement_ang=ALCFG["baseline_max_displacement_ang"],
    script:
        "../../scripts/al_baseline.py"


rule al_dataset:
    input:
        unpack(al_baseline),
        selected=lambda wc: al_selected_upto(wc.round),
        outputs=lambda wc: al_outputs_upto(wc.round),
    output:
        examples=directory(f"{AL}/round{{round}}/dataset/examples"),
        extxyz=f"{AL}/round{{round}}/dataset/dataset.extxyz",
        index=f"{AL}/round{{round}}/dataset/index.json",
    log:
        f"{AL}/logs/dataset_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    params:
        store=f"{R}/dft",
        on_failure=ALCFG["on_failure"],
    script:
        "../../scripts/al_dataset.py"


rule al_gvectors:
    input:
        index=f"{AL}/round{{round}}/dataset/index.json",
        examples=f"{AL}/round{{round}}/dataset/examples",
        structure=f"{R}/structure/unitcell.json",
    output:
        f"{AL}/round{{round}}/gvectors.npz",
    log:
        f"{AL}/logs/gvectors_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    params:
        descriptors=config["ml"]["descriptors"],
    script:
        "../../scripts/ml_gvectors.py"


rule al_pack:
    input:
        f"{AL}/round{{round}}/gvectors.npz",
    output:
        directory(f"{AL}/round{{round}}/tfrecords"),
    log:
        f"{AL}/logs/pack_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    params:
        data="disp",
        elements_per_file=config["ml"]["train"]["elements_per_file"],
    script:
        "../../scripts/ml_pack.py"


rule al_train:
    input:
        pack=f"{AL}/round{{round}}/tfrecords",
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
    output:
        model=f"{AL}/round{{round}}/models/member{{member}}/model.npz",
        meta=f"{AL}/round{{round}}/models/member{{member}}/model.json",
        metrics=f"{AL}/round{{round}}/models/member{{member}}/metrics.csv",
    log:
        f"{AL}/logs/train_{{round}}_{{member}}.log",
    wildcard_constraints:
        round="[0-9]+",
        member="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    threads: 2
    resources:
        ml_train=1,
    params:
        train={k: v for k, v in config["ml"]["train"].items() if k not in ("data", "validation_fraction")},
        model=lambda wc: f"al-round{wc.round}",
        validation_fraction=0.0,  # every pw.x run of the loop trains; held out: the next batch
        out_dir=lambda wc: f"{AL}/round{wc.round}/models/member{wc.member}",
    script:
        "../../scripts/ml_train.py"


rule al_infer:
    input:
        unpack(al_baseline),
        models=al_models,
        manifest=f"{R}/sow/manifest.json",
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
    output:
        forces=f"{AL}/round{{round}}/infer/forces.dat",
        sigma=f"{AL}/round{{round}}/infer/sigma.dat",
        timing=f"{AL}/round{{round}}/infer/timing.json",
    log:
        f"{AL}/logs/infer_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    params:
        store=f"{R}/dft",
    script:
        "../../scripts/ml_infer.py"


rule al_predict:
    input:
        unpack(al_baseline),
        models=al_models,
        pool=lambda wc: al_pools_upto(wc.round),
        manifest=f"{R}/sow/manifest.json",
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
        index=f"{AL}/round{{round}}/dataset/index.json",
    output:
        f"{AL}/round{{round}}/predict/scores.csv",
    log:
        f"{AL}/logs/predict_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    params:
        store=f"{R}/dft",
    script:
        "../../scripts/al_predict.py"


rule al_md:
    input:
        unpack(al_baseline),
        models=al_models,
        gvectors=f"{AL}/round{{round}}/gvectors.npz",
        structure=f"{R}/structure/unitcell.json",
        template=config["supercell_template"],
    output:
        f"{AL}/round{{round}}/md/pool.json",
    log:
        f"{AL}/logs/md_{{round}}.log",
    wildcard_constraints:
        round="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
        # each snapshot's store key holds pw.x's version, read by running the program once (kappaflow.engine):
        # the pw.x modules too (or set dft.pw_version where pw.x cannot start on this rule's node)
        *config["modules"]["pwx"],
    params:
        sow=config["sow"],
        dft=config["dft"],
        al=ALCFG,
        store=f"{R}/dft",
    script:
        "../../scripts/al_md.py"


rule al_inject:
    input:
        unpack(al_inject_inputs),
        manifest=f"{R}/sow/manifest.json",
    output:
        directory(f"{AL}/{{stage}}/store"),
    log:
        f"{AL}/logs/inject_{{stage}}.log",
    wildcard_constraints:
        stage="round[0-9]+|final",
    conda:
        "../../envs/ml.yaml"
    params:
        store=f"{R}/dft",
        al=ALCFG,
    script:
        "../../scripts/al_inject.py"


rule al_reap:
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        store=f"{AL}/{{stage}}/store",
    output:
        fc2=f"{AL}/{{stage}}/fc/fc2.hdf5",
        fc3=f"{AL}/{{stage}}/fc/fc3.hdf5",
        fc2_shengbte=f"{AL}/{{stage}}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{AL}/{{stage}}/fc/FORCE_CONSTANTS_3RD",
    log:
        f"{AL}/logs/reap_{{stage}}.log",
    wildcard_constraints:
        stage="round[0-9]+|final",
    conda:
        "../../envs/phonons.yaml"
    resources:
        mem_mb=lambda wc: mem_mb_estimate(config, "reap"),
    params:
        reap=config["reap"],
        store=lambda wc: f"{AL}/{wc.stage}/store",
    script:
        "../../scripts/reap.py"


rule al_bte:
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
    log:
        f"{AL}/logs/bte_{{stage}}.log",
    wildcard_constraints:
        stage="round[0-9]+|final",
    conda:
        "../../envs/phonons.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc: mem_mb_estimate(config, "bte"),
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
            "ml": {
                "route": "active learning",
                "inject_mode": "hybrid",
                "inject_provenance": f"{AL}/{wc.stage}/store/provenance.json",
                "train": config["ml"]["train"],
                "descriptors": config["ml"]["descriptors"],
                "al": ALCFG,
            },
        },
    script:
        "../../scripts/bte.py"


rule al_report:
    input:
        unpack(al_report_inputs),
        pool=lambda wc: al_pools_upto(al_stop_round() - 1),
    output:
        summary=f"{AL}/final/summary.json",
        rounds=report(f"{AL}/final/rounds.csv", category="Active learning", caption="../report/al.rst"),
        heldout=report(f"{AL}/final/heldout.csv", category="Active learning", caption="../report/al.rst"),
        kappa=report(f"{AL}/final/kappa_per_round.png", category="Active learning", caption="../report/al.rst"),
        kappa_error=report(
            f"{AL}/final/kappa_error_vs_runs.png", category="Active learning", caption="../report/al.rst"
        ),
        rmse=report(f"{AL}/final/heldout_rmse.png", category="Active learning", caption="../report/al.rst"),
        disagreement=report(
            f"{AL}/final/disagreement_vs_force.png", category="Active learning", caption="../report/al.rst"
        ),
    log:
        f"{AL}/logs/report.log",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    params:
        al_dir=lambda wc, output: os.path.dirname(os.path.dirname(output.summary)),  # AL
        store=f"{R}/dft",
        members=AL_MEMBERS,
        al=ALCFG,
        reference=f"{R}/bte/kappa.csv",  # read when the DFT route has run (never made by `al`)
        title=kfconfig.figure_title(config),
    script:
        "../../scripts/al_report.py"


rule al:
    input:
        f"{AL}/final/summary.json",
        f"{AL}/final/kappa_per_round.png",
