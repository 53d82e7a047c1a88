# Input functions of al.smk (the workflow catalog's convention: functions apart from rules; snakemake --lint).


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


def al_baseline(wildcards):
    """The round's Δ-learning baseline (ml.al.baseline: fc), or nothing."""
    return {"baseline": f"{AL}/round{wildcards.round}/baseline/baseline.npz"} if ALCFG["baseline"] == "fc" else {}


def al_models(wildcards):
    return expand(f"{AL}/round{wildcards.round}/models/member{{member}}/model.npz", member=AL_MEMBERS)


def al_stage_round(stage):
    """The committee round whose forces a stage uses: round<r> itself; final: the round before the stop."""
    return int(stage[5:]) if stage.startswith("round") else al_stop_round() - 1


def al_inject_inputs(wildcards):
    r = al_stage_round(wildcards.stage)
    files = {
        "forces": f"{AL}/round{r}/infer/forces.dat",
        "selected": al_selected_upto(r + (wildcards.stage == "final")),
    }
    if wildcards.stage == "final" and ALCFG["gate"] == "dft":
        files["scores"] = f"{AL}/round{r}/predict/scores.csv"
        files["gated"] = [f"{R}/dft/{k}/pw.out" for k in final_dft_keys(f"{AL}/round{r}/predict/scores.csv", ALCFG)]
    return files


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
