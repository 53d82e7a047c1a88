# The ML force route (docs/ml.md): AIMD data, PANNA-style G-vectors, TFRecords, a TensorFlow committee,
# inference on the displaced supercells, force injection, and the DFT route's own reap and bte.
# Targets: `snakemake ml` (the model of ml.train) and `snakemake ablation` (four models vs DFT).
from kappaflow.ml.steps import md_key, model_name, snapshot_keys

MLCFG = config["ml"]
ML = f"{R}/ml"


checkpoint aimd_plan:
    input:
        structure=f"{R}/structure/unitcell.json",
        template=config["supercell_template"],
    output:
        f"{R}/aimd/plan.json",
    log:
        f"{R}/logs/aimd_plan.log",
    conda:
        "../../envs/ml.yaml"
    # the store key holds pw.x's version, read by running the program once (kappaflow.engine): the same
    # modules as the pw.x jobs (or set dft.pw_version where pw.x cannot start on this rule's node)
    envmodules:
        *config["modules"]["pwx"],
    params:
        sow=config["sow"],
        aimd=MLCFG["aimd"],
        engine=engine_tag(config["dft"]["pw_command"]),
        store=f"{R}/dft",
        store_key=KEY_SCHEME,  # a new key scheme reruns the sow: old store entries are never reused
    script:
        "../../scripts/ml_aimd_plan.py"


include: "ml_functions.smk"


checkpoint aimd_snapshots:
    input:
        plan=f"{R}/aimd/plan.json",
        md=aimd_md_output,
        template=config["supercell_template"],
    output:
        f"{R}/aimd/snapshots.json",
    log:
        f"{R}/logs/aimd_snapshots.log",
    conda:
        "../../envs/ml.yaml"
    # the store key holds pw.x's version, read by running the program once (kappaflow.engine): the same
    # modules as the pw.x jobs (or set dft.pw_version where pw.x cannot start on this rule's node)
    envmodules:
        *config["modules"]["pwx"],
    params:
        store=f"{R}/dft",
    script:
        "../../scripts/ml_aimd_snapshots.py"


rule dataset:
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=dft_outputs,
        aimd=snapshot_outputs,
    output:
        examples=directory(f"{ML}/dataset/examples"),
        extxyz=f"{ML}/dataset/dataset.extxyz",
        index=f"{ML}/dataset/index.json",
    log:
        f"{ML}/logs/dataset.log",
    conda:
        "../../envs/ml.yaml"
    params:
        store=f"{R}/dft",
        snapshots=f"{R}/aimd/snapshots.json" if MLCFG["aimd"]["enabled"] else None,
    script:
        "../../scripts/ml_dataset.py"


rule gvectors:
    input:
        index=f"{ML}/dataset/index.json",
        examples=f"{ML}/dataset/examples",
        structure=f"{R}/structure/unitcell.json",
    output:
        f"{ML}/gvectors/gvectors.npz",
    log:
        f"{ML}/logs/gvectors.log",
    conda:
        "../../envs/ml.yaml"
    params:
        descriptors=MLCFG["descriptors"],
    script:
        "../../scripts/ml_gvectors.py"


rule pack:
    input:
        f"{ML}/gvectors/gvectors.npz",
    output:
        directory(f"{ML}/tfrecords/{{data}}"),
    log:
        f"{ML}/logs/pack_{{data}}.log",
    wildcard_constraints:
        data="disp|disp_aimd",
    conda:
        "../../envs/ml.yaml"
    params:
        elements_per_file=MLCFG["train"]["elements_per_file"],
    script:
        "../../scripts/ml_pack.py"


MAIN_MODEL = model_name(MLCFG["train"]["data"], MLCFG["train"]["validation_fraction"])
ABLATION_MODELS = ["disp-full", "disp-val20", "disp_aimd-full", "disp_aimd-val20"]
MEMBERS = list(range(MLCFG["train"]["committee_size"]))
MODEL_PATTERN = "(disp|disp_aimd)-(full|val[0-9]+)"


rule train:
    input:
        pack=pack_of,
        gvectors=f"{ML}/gvectors/gvectors.npz",
    output:
        model=f"{ML}/models/{{model}}/member{{member}}/model.npz",
        meta=f"{ML}/models/{{model}}/member{{member}}/model.json",
        metrics=f"{ML}/models/{{model}}/member{{member}}/metrics.csv",
    log:
        f"{ML}/logs/train_{{model}}_{{member}}.log",
    wildcard_constraints:
        model=MODEL_PATTERN,
        member="[0-9]+",
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    threads: 2
    resources:
        ml_train=1,
    params:
        train={k: v for k, v in MLCFG["train"].items() if k not in ("data", "validation_fraction")},
        out_dir=lambda wc: f"{ML}/models/{wc.model}/member{wc.member}",
    script:
        "../../scripts/ml_train.py"


rule infer:
    input:
        models=expand(f"{ML}/models/{{{{model}}}}/member{{member}}/model.npz", member=MEMBERS),
        manifest=f"{R}/sow/manifest.json",
        gvectors=f"{ML}/gvectors/gvectors.npz",
        disp=dft_outputs,
    output:
        forces=f"{ML}/{{model}}/infer/forces.dat",
        sigma=f"{ML}/{{model}}/infer/sigma.dat",
        timing=f"{ML}/{{model}}/infer/timing.json",
    log:
        f"{ML}/logs/infer_{{model}}.log",
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/ml.yaml"
    envmodules:
        *config["modules"]["tensorflow"],
    params:
        store=f"{R}/dft",
    script:
        "../../scripts/ml_infer.py"


rule inject:
    input:
        forces=f"{ML}/{{model}}/infer/forces.dat",
        manifest=f"{R}/sow/manifest.json",
    output:
        directory(f"{ML}/{{model}}/store"),
    log:
        f"{ML}/logs/inject_{{model}}.log",
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/ml.yaml"
    params:
        store=f"{R}/dft",
        mode=MLCFG["inject"]["mode"],
    script:
        "../../scripts/ml_inject.py"


rule reap_ml:
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        store=f"{ML}/{{model}}/store",
    output:
        fc2=f"{ML}/{{model}}/fc/fc2.hdf5",
        fc3=f"{ML}/{{model}}/fc/fc3.hdf5",
        fc2_shengbte=f"{ML}/{{model}}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{ML}/{{model}}/fc/FORCE_CONSTANTS_3RD",
    log:
        f"{ML}/logs/reap_{{model}}.log",
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/phonons.yaml"
    params:
        reap=config["reap"],
        store=lambda wc: f"{ML}/{wc.model}/store",
    script:
        "../../scripts/reap.py"


rule bte_ml:
    input:
        disp=f"{R}/sow/phono3py_disp.yaml",
        fc2=f"{ML}/{{model}}/fc/fc2.hdf5",
        fc3=f"{ML}/{{model}}/fc/fc3.hdf5",
        fc2_shengbte=f"{ML}/{{model}}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{ML}/{{model}}/fc/FORCE_CONSTANTS_3RD",
    output:
        **({"modes": f"{ML}/{{model}}/bte/{BTE_MODES}"} if BTE_MODES else {}),
        kappa=f"{ML}/{{model}}/bte/kappa.csv",
        provenance=f"{ML}/{{model}}/bte/kappa.provenance.json",
    log:
        f"{ML}/logs/bte_{{model}}.log",
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/phonons.yaml"
    threads: 2
    params:
        bte=config["bte"],
        workdir=lambda wc: f"{ML}/{wc.model}/bte/shengbte",
        provenance=lambda wc: {
            "route": "ml",
            "manifest": f"{R}/sow/manifest.json",
            "disp_yaml": f"{R}/sow/phono3py_disp.yaml",
            "store": f"{R}/dft",
            "force_store": f"{ML}/{wc.model}/store",
            "reap": config["reap"],
            "sow_config": config["sow"],
            "unitcell": config["unitcell"],
            "supercell_template": config["supercell_template"],
            "structure": f"{R}/structure/unitcell.json",
            "models": [f"{ML}/models/{wc.model}/member{m}/model.npz" for m in MEMBERS],
            "ml": {
                "model": wc.model,
                "inject_mode": MLCFG["inject"]["mode"],
                "inject_provenance": f"{ML}/{wc.model}/store/provenance.json",
                "train": MLCFG["train"],
                "descriptors": MLCFG["descriptors"],
            },
        },
    script:
        "../../scripts/bte.py"


rule ml_report:
    input:
        dft_kappa=f"{R}/bte/kappa.csv",
        ml_kappa=f"{ML}/{{model}}/bte/kappa.csv",
        forces=f"{ML}/{{model}}/infer/forces.dat",
        sigma=f"{ML}/{{model}}/infer/sigma.dat",
        timing=f"{ML}/{{model}}/infer/timing.json",
        metrics=expand(f"{ML}/models/{{{{model}}}}/member{{member}}/metrics.csv", member=MEMBERS),
        cost=f"{R}/dft/cost.csv",
    output:
        kappa=report(
            f"{ML}/{{model}}/report/kappa_ml_vs_dft.png", category="ML route", caption="../report/ml_kappa.rst"
        ),
        parity=report(f"{ML}/{{model}}/report/force_parity.png", category="ML route", caption="../report/ml_parity.rst"),
        training=report(
            f"{ML}/{{model}}/report/training_curves.png", category="ML route", caption="../report/ml_training.rst"
        ),
        committee=report(
            f"{ML}/{{model}}/report/committee_disagreement.png",
            category="ML route",
            caption="../report/ml_committee.rst",
        ),
        timing=report(
            f"{ML}/{{model}}/report/timing_dft_vs_ml.csv", category="ML route", caption="../report/ml_timing.rst"
        ),
        summary=f"{ML}/{{model}}/report/summary.json",
    log:
        f"{ML}/logs/ml_report_{{model}}.log",
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/ml.yaml"
    params:
        title=kfconfig.figure_title(config),
    script:
        "../../scripts/ml_report.py"


rule ablation_report:
    input:
        dft_kappa=f"{R}/bte/kappa.csv",
        models=expand(f"{ML}/{{model}}/bte/kappa.csv", model=ABLATION_MODELS),
    output:
        figure=report(f"{ML}/ablation/kappa_ablation.png", category="ML route", caption="../report/ml_ablation.rst"),
        table=report(f"{ML}/ablation/kappa_ablation.csv", category="ML route", caption="../report/ml_ablation.rst"),
    log:
        f"{ML}/logs/ablation.log",
    conda:
        "../../envs/ml.yaml"
    params:
        models=ABLATION_MODELS,
    script:
        "../../scripts/ml_ablation.py"


# the analysis figures of an ML model's BTE (report.smk's analysis_route, for ML/<model>/)
if BTE_MODES:

    use rule analysis_route as analysis_ml with:
        input:
            modes=f"{ML}/{{model}}/bte/{BTE_MODES}",
            kappa=f"{ML}/{{model}}/bte/kappa.csv",
        output:
            modes=f"{ML}/{{model}}/analysis/modes.csv",
            cumulative_table=f"{ML}/{{model}}/analysis/cumulative_kappa.csv",
            branches_table=f"{ML}/{{model}}/analysis/branches.csv",
            cumulative=f"{ML}/{{model}}/analysis/cumulative_kappa.png",
            lifetimes=f"{ML}/{{model}}/analysis/lifetimes.png",
            branches=f"{ML}/{{model}}/analysis/branches.png",
            kappa_loglog=f"{ML}/{{model}}/analysis/kappa_loglog.png",
        log:
            f"{ML}/logs/analysis_{{model}}.log",
        wildcard_constraints:
            model=MODEL_PATTERN,
        params:
            analysis=config["analysis"],
            title=lambda wc: f"{kfconfig.figure_title(config)}, ML model {wc.model}",


rule ml:
    input:
        f"{ML}/{MAIN_MODEL}/report/summary.json",
        f"{ML}/{MAIN_MODEL}/report/kappa_ml_vs_dft.png",
        f"{ML}/dataset/dataset.extxyz",
        [f"{ML}/{MAIN_MODEL}/analysis/cumulative_kappa.png"] if BTE_MODES else [],


rule ablation:
    input:
        f"{ML}/ablation/kappa_ablation.png",
        expand(f"{ML}/{{model}}/report/summary.json", model=ABLATION_MODELS),
