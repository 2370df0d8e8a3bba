"""Science check of the rotation-equivariant V1 model: RotEquiV1 (16 x 8) against the CNN baselines of Table 1 on a
simulated population whose neurons are rotated copies of a few feature types (each model's config stacked on
configs/rotequi_v1/base.yaml and simulated.yaml).

Each model is trained and tested with the real command line (``bioviz fit`` then ``bioviz test --ckpt_path best``)
in its own process, ``--jobs`` at a time; the table lists test correlation (of the checkpoint with the best
validation loss), the oracles, parameters (core and total), the step of that checkpoint and the wall time of
``fit``. Every model gets the same schedule (``--patience``, ``--val_steps``) and step cap (``--max_steps``).

    OMP_NUM_THREADS=1 python bench/rotequi_science.py --out science_runs --jobs 2

Overrides after ``--`` go to every model, e.g. the same penalty weights for all (the configs carry the penalties
the paper tuned for each model on its data, not on this simulation):

    ... -- --model.init_args.conv_smooth_weight=0.0015324 --model.init_args.conv_sparse_weight=0.007974 \
           --model.init_args.readout_sparsity=0.0179

``--resume`` continues every model's run under ``--out`` from its last checkpoint (the schedule's state included) up
to a new ``--max_steps`` and tests it again, e.g. runs that hit a step cap, or were stopped, trained on to plateaus.

``--trajectories`` trains nothing: it prints every run's validation loss / correlation under ``--out`` side by side
at equal steps (from the TensorBoard logs), also for runs that were stopped before their test. ``--results`` trains
nothing either: it prints the test results of every model under ``--out`` (also from several runs of this script
sharing it) and whether the claim holds: RotEquiV1 16 x 8 above every CNN with as many or more parameters.
``--compare MODEL OTHER`` scores the two best checkpoints on their test set again and gives the difference of their
test correlations with a 95 % interval over resampled test images (both models on each resample).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import REPO, bioviz, read_test_metrics  # noqa: E402

# name -> run: the model's config in configs/rotequi_v1/ (the run without "_simulated") on simulated.yaml, logged under
# runs/rotequi_v1_<run>; the longest first, so parallel jobs end together
MODELS = {
    "cnn_128_128_256": "table1_cnn_128_128_256_simulated",
    "rotequi_16x8": "fig2_n16_simulated",
    "cnn_128": "table1_cnn_128_simulated",
    "cnn_64": "table1_cnn_64_simulated",
    "cnn_32": "table1_cnn_32_simulated",
    "rotequi_positive": "table1_positive_features_simulated",
    "rotequi_dense_l2": "table1_dense_l2_simulated",
    "rotequi_transfer": "transfer_simulated",
}
TRAJECTORY_STEPS = 6  # validations shown by --trajectories, evenly spaced


def stack(config: str) -> list[str]:
    """The config files of a run in MODELS, in stacking order: the shared base, the simulated data, the model."""
    folder = Path("configs") / "rotequi_v1"
    return [str(folder / "base.yaml"), str(folder / "simulated.yaml"),
            str(folder / f"{config.removesuffix('_simulated')}.yaml")]


def run(name: str, config: str, args: argparse.Namespace) -> dict:
    configs = [a for path in stack(config) for a in ("-c", str(REPO / path))]
    # The model's config names its runs the same on either data; this name keeps these runs apart from those on
    # recordings, and in the folders that --trajectories, --results and --compare read.
    common = [f"--trainer.logger.init_args.name=rotequi_v1_{config}",
              f"--trainer.callbacks.patience={args.patience}", f"--trainer.callbacks.val_steps={args.val_steps}",
              f"--trainer.max_steps={args.max_steps}", "--trainer.enable_progress_bar=false",
              *args.extra]
    out = Path(args.out)
    start = time.time()
    # --resume: `bioviz fit --ckpt_path last` continues the run's newest last.ckpt in its own folder (schedule state
    # included) up to the new --max_steps, or starts a new run where there is none; the log is appended to.
    fit = ["fit", "--ckpt_path=last"] if args.resume else ["fit"]
    with open(out / f"{name}.log", "a" if args.resume else "w") as log:
        fit_log = bioviz(name, [fit[0], *configs, *common, *fit[1:]], out, log)
        fit_seconds = time.time() - start
        metrics = read_test_metrics(bioviz(name, ["test", *configs, *common, "--ckpt_path=best"], out, log))
    best = next((out / "runs" / f"rotequi_v1_{config}").glob("version_*/checkpoints/best.ckpt"))
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    params = ckpt["state_dict"]
    is_param = {k for k in params if not any(s in k for s in ("running_", "num_batches", "rotated_basis"))}
    result = {
        "model": name, "config": " + ".join(stack(config)), **metrics,
        "params_core": sum(params[k].numel() for k in is_param if k.startswith("core.")),
        "params_total": sum(params[k].numel() for k in is_param),
        "best_step": ckpt["global_step"], "hit_step_cap": "`max_steps=" in fit_log, "resumed": args.resume,
        "fit_seconds": round(fit_seconds), "seconds": round(time.time() - start),
    }
    print(json.dumps(result), flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def validation_trajectories(out: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """{config: {step: (val/loss, val/corr)}} of every run under ``out``, read from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {}
    for version in sorted((out / "runs").glob("rotequi_v1_*/version_*")):
        events = EventAccumulator(str(version))
        events.Reload()
        if "val/loss" not in events.Tags()["scalars"]:
            continue
        corr = {e.step: e.value for e in events.Scalars("val/corr")}
        runs[version.parent.name.removeprefix("rotequi_v1_")] = {
            e.step: (e.value, corr.get(e.step, float("nan"))) for e in events.Scalars("val/loss")}
    if not runs:
        raise SystemExit(f"no validation logs under {out / 'runs'}; run the science check with --out {out} first")
    return runs


def print_trajectories(out: Path, at: list[int] | None = None) -> None:
    runs = validation_trajectories(out)
    steps = sorted(set().union(*runs.values()))
    shown = at or sorted(set(steps[:: max(1, len(steps) // TRAJECTORY_STEPS)] + [steps[-1]]))
    print("validation loss / correlation at equal steps (blank: that run did not reach the step)")
    print(f"{'config':36s}" + "".join(f"{step:>15d}" for step in shown))
    for name, trajectory in runs.items():
        cells = (f"{trajectory[s][0]:7.1f}/{trajectory[s][1]:.3f}" if s in trajectory else "" for s in shown)
        print(f"{name:36s}" + "".join(f"{c:>15s}" for c in cells))


def read_results(out: Path) -> list[dict]:
    """The test results of every model trained under ``out`` (``results.jsonl``; several drivers may share it). A
    model tested again (a resumed or repeated run) replaces its earlier result."""
    path = out / "results.jsonl"
    if not path.exists():
        raise SystemExit(f"no test results in {path}; run the science check with --out {out} first")
    latest = {}
    for line in path.read_text().splitlines():
        if line.strip():
            result = json.loads(line)
            latest[result["model"]] = result
    return list(latest.values())


def claim_verdict(results: list[dict]) -> str:
    """Whether RotEquiV1 16 x 8 reached a higher test correlation than every CNN baseline with as many or more
    (total trainable) parameters, the science check's claim, naming each such CNN and its correlation."""
    rotequi = [r for r in results if r["model"] == "rotequi_16x8"]
    if len(rotequi) != 1:
        return f"claim not decided: {len(rotequi)} RotEquiV1 16x8 results (need exactly one per run directory)"
    ours = rotequi[0]
    rivals = [r for r in results if r["model"].startswith("cnn_") and r["params_total"] >= ours["params_total"]]
    if not rivals:
        return "claim not decided: no CNN baseline with as many or more parameters was tested"
    beaten = [r for r in rivals if ours["test/corr"] > r["test/corr"]]
    listed = ", ".join(f"{r['model']} {r['test/corr']:.3f}" for r in rivals)
    untested = [m for m in MODELS if m.startswith("cnn_") and m not in {r["model"] for r in results}]
    if len(beaten) < len(rivals):
        holds = "NOT SHOWN"
    else:
        holds = f"HOLDS for the tested CNNs only (not tested: {', '.join(untested)})" if untested else "HOLDS"
    return (f"claim {holds}: RotEquiV1 16x8 {ours['test/corr']:.3f} beats {len(beaten)} of {len(rivals)} CNNs with "
            f">= {ours['params_total']:,} parameters ({listed})")


def print_results(results: list[dict]) -> None:
    print(f"{'model':18s} {'test/corr':>9s} {'oracle':>7s} {'true':>7s} {'core params':>11s} {'total':>9s} "
          f"{'best at':>7s} {'fit s':>6s}")
    for r in results:
        print(f"{r['model']:18s} {r.get('test/corr', float('nan')):9.3f} {r.get('test/oracle', float('nan')):7.3f} "
              f"{r.get('test/oracle_true', float('nan')):7.3f} {r['params_core']:11d} {r['params_total']:9d} "
              f"{r['best_step']:7d} {r['fit_seconds']:6d}" + ("  (step cap)" if r.get("hit_step_cap") else ""))
    print(claim_verdict(results))


def _best_run(out: Path, model: str) -> Path:
    if model not in MODELS:
        raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    found = sorted((out / "runs" / f"rotequi_v1_{MODELS[model]}").glob("version_*/checkpoints/best.ckpt"))
    if not found:
        raise SystemExit(f"no best checkpoint of {model} under {out / 'runs'}; train it with --out {out} first")
    return found[-1]


def per_neuron_correlation(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson r of each neuron (column) over images (rows), ``[images, neurons]`` -> ``[neurons]``: the metric
    behind ``test/corr``, so the comparison rescores exactly what the test logged."""
    from zoo.metrics import PerNeuronCorrelation

    metric = PerNeuronCorrelation(target.shape[1])
    metric.update(pred, target)
    return metric.compute()


@torch.no_grad()
def test_predictions(checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's predictions and the repeat-averaged responses on its run's test set, ``[images, neurons]`` each."""
    import yaml

    import zoo.data
    import zoo.models

    config = yaml.safe_load((checkpoint.parents[1] / "config.yaml").read_text())
    model_class = getattr(zoo.models, config["model"]["class_path"].rsplit(".", 1)[-1])
    data_class = getattr(zoo.data, config["data"]["class_path"].rsplit(".", 1)[-1])
    model = model_class.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    data = data_class(**config["data"]["init_args"])
    data.setup("test")
    preds, targets = [], []
    for batch in data.test_dataloader():  # (images, responses [B, R, n] or [B, n], rates if simulated)
        responses = batch[1].mean(1) if batch[1].ndim == 3 else batch[1]
        preds.append(model._predict(batch[0], responses))
        targets.append(responses)
    return torch.cat(preds), torch.cat(targets)


def paired_comparison(out: Path, first: str, second: str, resamples: int = 2000, seed: int = 0) -> dict:
    """Test correlation of two models on the same test images, their difference, and a 95 % interval of the
    difference from resampling the test images (both models on the same resample): whether a gap is larger than
    what the choice of test images alone would give."""
    (pred_a, target), (pred_b, target_b) = (test_predictions(_best_run(out, m)) for m in (first, second))
    if not torch.equal(target, target_b):
        raise SystemExit(f"{first} and {second} were tested on different data; compare runs of one population")
    corr_a, corr_b = per_neuron_correlation(pred_a, target), per_neuron_correlation(pred_b, target)
    generator = torch.Generator().manual_seed(seed)
    differences = []
    for _ in range(resamples):
        rows = torch.randint(len(target), (len(target),), generator=generator)
        differences.append(float((per_neuron_correlation(pred_a[rows], target[rows])
                                  - per_neuron_correlation(pred_b[rows], target[rows])).mean()))
    differences = torch.tensor(differences, dtype=torch.float64)
    low, high = differences.quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"first": first, "second": second, "corr_first": float(corr_a.mean()), "corr_second": float(corr_b.mean()),
            "difference": float((corr_a - corr_b).mean()), "interval_95": (low, high),
            "neurons_first_higher": float((corr_a > corr_b).double().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="science_runs")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS)[:5], choices=list(MODELS))
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--val_steps", type=int, default=50)
    parser.add_argument("--max_steps", type=int, default=3000)
    parser.add_argument("--resume", action="store_true",
                        help="continue each model's run under --out from its last checkpoint (schedule state "
                             "included) up to --max_steps, then test it; a model without a run starts a new one")
    parser.add_argument("--trajectories", action="store_true",
                        help="print the validation trajectories of the runs under --out and exit")
    parser.add_argument("--at", type=int, nargs="+", help="with --trajectories: these steps (default: ~6 of them)")
    parser.add_argument("--results", action="store_true",
                        help="print the test results of every model trained under --out (also by other runs of this "
                             "script with the same --out) and whether the claim holds, and exit")
    parser.add_argument("--compare", nargs=2, metavar=("MODEL", "OTHER"),
                        help="test correlations of two models trained under --out, their difference and its 95 %% "
                             "interval over resampled test images, and exit")
    parser.add_argument("extra", nargs="*", help="more bioviz overrides for every model, after --")
    args = parser.parse_args()
    if args.trajectories:
        print_trajectories(Path(args.out), args.at)
        return
    if args.compare:
        c = paired_comparison(Path(args.out), *args.compare)
        low, high = c["interval_95"]
        print(f"{c['first']} {c['corr_first']:.4f} - {c['second']} {c['corr_second']:.4f} = {c['difference']:+.4f} "
              f"(95 % interval over resampled test images {low:+.4f} .. {high:+.4f}); {c['first']} higher for "
              f"{100 * c['neurons_first_higher']:.0f} % of the neurons")
        return
    if args.results:
        print_results(read_results(Path(args.out)))
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda name: run(name, MODELS[name], args), args.models))
    print()
    print_results(results)


if __name__ == "__main__":
    main()
