rule report:
    conda:
        "../../envs/phonons.yaml"
    input:
        kappa=f"{R}/bte/kappa.csv",
        disp=f"{R}/sow/phono3py_disp.yaml",
        fc2=f"{R}/fc/fc2.hdf5",
    output:
        kappa_linear=report(
            f"{R}/report/kappa_linear.png",
            category="Thermal conductivity",
            caption="../report/kappa_plot.rst",
        ),
        kappa_log=report(
            f"{R}/report/kappa_log.png",
            category="Thermal conductivity",
            caption="../report/kappa_plot.rst",
        ),
        dispersion=report(
            f"{R}/report/dispersion.png",
            category="Phonons",
            caption="../report/dispersion.rst",
        ),
    params:
        title=kfconfig.figure_title(config),
        band_points=config["report"]["band_points"],
    log:
        f"{R}/logs/report.log",
    script:
        "../../scripts/report.py"
