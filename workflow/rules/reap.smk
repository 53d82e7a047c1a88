rule reap:
    input:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
        outputs=dft_outputs,
    output:
        fc2=f"{R}/fc/fc2.hdf5",
        fc3=f"{R}/fc/fc3.hdf5",
        fc2_shengbte=f"{R}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{R}/fc/FORCE_CONSTANTS_3RD",
    log:
        f"{R}/logs/reap.log",
    conda:
        "../../envs/phonons.yaml"
    resources:
        # peak memory from the plan's model (docs/planning.md); cluster profiles may override it
        mem_mb=lambda wc: mem_mb_estimate(config, "reap"),
    params:
        reap=config["reap"],
        store=f"{R}/dft",
    script:
        "../../scripts/reap.py"
