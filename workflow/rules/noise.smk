# Force-noise sensitivity (docs/noise.md): Gaussian noise on the displaced supercells' DFT forces, the
# same reap and BTE per (amplitude, seed), no pw.x job. Target: `snakemake noise_study`.
from kappaflow.noise import amplitude_label

NOISE = config["noise"]
NOISE_RUNS = {amplitude_label(a): a for a in sorted(set(NOISE["amplitudes_ev_per_ang"]) | {0.0})}
NOISE_FILES = [
    f"{R}/noise/a{label}_s{seed}/kappa.csv"
    for label, a in NOISE_RUNS.items()
    for seed in (range(NOISE["seeds"]) if a > 0 else [0])
]


rule noise_kappa:
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        outputs=dft_outputs,
    output:
        kappa=f"{R}/noise/a{{amp}}_s{{seed}}/kappa.csv",
        meta=f"{R}/noise/a{{amp}}_s{{seed}}/kappa.json",
        provenance=f"{R}/noise/a{{amp}}_s{{seed}}/kappa.provenance.json",
    log:
        f"{R}/logs/noise/a{{amp}}_s{{seed}}.log",
    wildcard_constraints:
        amp="[0-9]+",
        seed="[0-9]+",
    conda:
        "../../envs/phonons.yaml"
    threads: 2
    params:
        store=f"{R}/dft",
        reap=config["reap"],
        bte=config["bte"],
        mesh=NOISE["mesh"],
        amplitude=lambda wc: NOISE_RUNS[wc.amp],
    script:
        "../../scripts/noise_kappa.py"


rule noise_ml_kappa:
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        outputs=dft_outputs,
        forces=f"{R}/ml/{{model}}/infer/forces.dat",
    output:
        kappa=f"{R}/noise/ml_{{model}}/kappa.csv",
        meta=f"{R}/noise/ml_{{model}}/kappa.json",
        provenance=f"{R}/noise/ml_{{model}}/kappa.provenance.json",
    log:
        f"{R}/logs/noise/ml_{{model}}.log",
    wildcard_constraints:
        model="(disp|disp_aimd)-(full|val[0-9]+)",
    conda:
        "../../envs/phonons.yaml"
    threads: 2
    params:
        store=f"{R}/dft",
        reap=config["reap"],
        bte=config["bte"],
        mesh=NOISE["mesh"],
    script:
        "../../scripts/noise_kappa.py"


rule noise_summary:
    input:
        noise=NOISE_FILES,
        ml=expand(f"{R}/noise/ml_{{model}}/kappa.csv", model=NOISE["ml_models"]),
    output:
        table=report(f"{R}/noise/noise_kappa.csv", category="Noise sensitivity", caption="../report/noise.rst"),
        tolerance=f"{R}/noise/tolerance.json",
        kappa_xx=report(f"{R}/noise/kappa_xx_vs_T.png", category="Noise sensitivity", caption="../report/noise.rst"),
        kappa_zz=report(f"{R}/noise/kappa_zz_vs_T.png", category="Noise sensitivity", caption="../report/noise.rst"),
        ratio=report(
            f"{R}/noise/kappa_ratio_vs_amplitude.png", category="Noise sensitivity", caption="../report/noise.rst"
        ),
    log:
        f"{R}/logs/noise/summary.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        band=NOISE["band"],
        models=NOISE["ml_models"],
    script:
        "../../scripts/noise_summary.py"


rule noise_study:
    input:
        f"{R}/noise/tolerance.json",
        f"{R}/noise/kappa_ratio_vs_amplitude.png",
