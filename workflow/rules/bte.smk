rule bte:
    input:
        disp=f"{R}/sow/phono3py_disp.yaml",
        fc2=f"{R}/fc/fc2.hdf5",
        fc3=f"{R}/fc/fc3.hdf5",
        fc2_shengbte=f"{R}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{R}/fc/FORCE_CONSTANTS_3RD",
        # the gate also guards sets it cannot precede (random, thirdorder): stability.smk
        stability=lambda wc: [f"{R}/stability/stability.json"] if config["stability"]["enabled"] else [],
    output:
        **({"modes": f"{R}/bte/{BTE_MODES}"} if BTE_MODES else {}),
        kappa=report(
            f"{R}/bte/kappa.csv",
            category="Thermal conductivity",
            caption="../report/kappa_table.rst",
        ),
        provenance=report(f"{R}/bte/kappa.provenance.json", category="Provenance", caption="../report/provenance.rst"),
    log:
        f"{R}/logs/bte.log",
    conda:
        "../../envs/phonons.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc: mem_mb_estimate(config, "bte"),
    params:
        bte=config["bte"],
        workdir=f"{R}/bte/shengbte",
        provenance={
            "route": "dft",
            "manifest": f"{R}/sow/manifest.json",
            "disp_yaml": f"{R}/sow/phono3py_disp.yaml",
            "store": f"{R}/dft",
            "reap": config["reap"],
            "sow_config": config["sow"],
            "unitcell": config["unitcell"],
            "supercell_template": config["supercell_template"],
            "structure": f"{R}/structure/unitcell.json",
        },
    script:
        "../../scripts/bte.py"
