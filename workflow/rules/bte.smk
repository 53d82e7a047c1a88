rule bte:
    conda:
        "../../envs/phonons.yaml"
    input:
        disp=f"{R}/sow/phono3py_disp.yaml",
        fc2=f"{R}/fc/fc2.hdf5",
        fc3=f"{R}/fc/fc3.hdf5",
        fc2_shengbte=f"{R}/fc/FORCE_CONSTANTS_2ND",
        fc3_shengbte=f"{R}/fc/FORCE_CONSTANTS_3RD",
    output:
        kappa=report(
            f"{R}/bte/kappa.csv",
            category="Thermal conductivity",
            caption="../report/kappa_table.rst",
        ),
    params:
        bte=config["bte"],
        workdir=f"{R}/bte/shengbte",
    threads: 2
    log:
        f"{R}/logs/bte.log",
    script:
        "../../scripts/bte.py"
