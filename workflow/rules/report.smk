rule report:
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
    log:
        f"{R}/logs/report.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        title=kfconfig.figure_title(config),
        band_points=config["report"]["band_points"],
    script:
        "../../scripts/report.py"


# where the heat is carried (kappaflow.analysis, docs/analysis.md): phono3py's mode file as tables and
# figures, for the DFT route (R/analysis/; ML/<model>/analysis/: ml.smk); phono3py backend only
if BTE_MODES:

    rule analysis_route:
        input:
            modes=f"{R}/bte/{BTE_MODES}",
            kappa=f"{R}/bte/kappa.csv",
        output:
            modes=f"{R}/analysis/modes.csv",
            cumulative_table=f"{R}/analysis/cumulative_kappa.csv",
            branches_table=f"{R}/analysis/branches.csv",
            cumulative=report(
                f"{R}/analysis/cumulative_kappa.png",
                category="Where the heat is carried",
                caption="../report/analysis_cumulative.rst",
            ),
            lifetimes=report(
                f"{R}/analysis/lifetimes.png",
                category="Where the heat is carried",
                caption="../report/analysis_lifetimes.rst",
            ),
            branches=report(
                f"{R}/analysis/branches.png",
                category="Where the heat is carried",
                caption="../report/analysis_branches.rst",
            ),
            kappa_loglog=report(
                f"{R}/analysis/kappa_loglog.png",
                category="Thermal conductivity",
                caption="../report/analysis_kappa_loglog.rst",
            ),
        log:
            f"{R}/logs/analysis.log",
        conda:
            "../../envs/phonons.yaml"
        params:
            analysis=config["analysis"],
            title=kfconfig.figure_title(config),
        script:
            "../../scripts/analysis.py"

    rule analysis:
        input:
            rules.analysis_route.output,
