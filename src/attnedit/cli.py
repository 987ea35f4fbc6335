"""Console entry points: attnedit-run, attnedit-directions, attnedit-tables, attnedit-evaluate."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from attnedit.assets import ASSETS_DIR
from attnedit.entry import fail, guarded, hydra_app, wants_help
from attnedit.errors import AttneditError


REPO_ROOT = Path(__file__).resolve().parents[2]
# ${repo:} in configs: the attnedit checkout, for files it ships (results/reference/...).
OmegaConf.register_new_resolver("repo", lambda: str(REPO_ROOT), replace=True)
# ${asset:<name>}: a folder shipped inside the package (the trained shapes DDPM, its regressor).
OmegaConf.register_new_resolver("asset", lambda name: str(ASSETS_DIR / name), replace=True)
# ${when:<a>,<b>,<value>}: value if a == b, else null (published numbers only beside the model they are for).
OmegaConf.register_new_resolver("when", lambda a, b, value: value if str(a) == str(b) else None, replace=True)


def conf_dir() -> str:
    """The repository's conf/ (or $ATTNEDIT_CONF_DIR): configs are edited by users, not shipped."""
    env = os.environ.get("ATTNEDIT_CONF_DIR")
    path = Path(env) if env else REPO_ROOT / "conf"
    if not (path / "config.yaml").exists():
        sys.exit(f"attnedit: no config.yaml in {path}; install attnedit editable from its checkout "
                 "(pip install -e .) or set ATTNEDIT_CONF_DIR to its conf/ folder")
    return str(path)


def _fail(err: Exception) -> None:
    fail(err)  # attnedit.entry: the project's one line last


#: The failure lines of this process's runs (a multirun has several): the process exits 1 after them.
_FAILURES: list[str] = []


def _multirun_group(cfg: DictConfig) -> None:
    """Jobs of one multirun share a W&B group: the sweep folder's name, unless set."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if cfg.get("group") is None and HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            with open_dict(cfg):
                cfg.group = f"{cfg.name}/{Path(hc.sweep.dir).name}"


def _run(cfg: DictConfig) -> None:
    from attnedit.runner import Runner
    from attnedit.writable import check_writable_folder

    _multirun_group(cfg)
    check_writable_folder(cfg.paths.runs_dir, "paths.runs_dir")  # before any weights load or edit
    # Errors reach attnedit.entry (through Hydra, HYDRA_FULL_ERROR set): one line, last.
    runner = Runner(cfg)
    if getattr(runner.backend, "random_weights", False):
        print(f"note: model '{runner.backend.name}' has RANDOM weights: this run shows the machinery, "
              "not real edits. Use model=ddpm_celebahq (or another trained model) for real results.")
    run_dir = runner.run().resolve()
    tables = run_dir / "tables" / "tables.md"
    print(tables.read_text() if tables.exists() else "")
    figures = sorted((run_dir / "figures").glob("*.png"))
    print(f"tables: {tables.parent}")
    for figure in figures:
        print(f"figure: {figure}")
    print(f"run dir: {run_dir}")
    _record_run_dir(run_dir)
    if runner.failure:  # every case ran; the failed ones are rows to retry (attnedit.failures)
        print(runner.failure, file=sys.stderr)
        _FAILURES.append(runner.failure)


def _record_run_dir(run_dir: Path) -> None:
    """For the multirun summary (attnedit.hydra_callbacks): the job's run dir in its Hydra output folder."""
    from hydra.core.hydra_config import HydraConfig

    from attnedit.hydra_callbacks import RUN_DIR_FILE

    if HydraConfig.initialized() and HydraConfig.get().runtime.output_dir:
        folder = Path(HydraConfig.get().runtime.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_DIR_FILE).write_text(f"{run_dir}\n")


RUN_OUTPUTS = ("choose folders you can write to: paths.results_dir=<dir> (results, Hydra's logs) "
               "or paths.runs_dir=<dir> (run directories)")


def run() -> None:
    hydra_app(_run, conf_dir(), "config", RUN_OUTPUTS)
    if _FAILURES:  # after every job of a multirun, not in the first that had a failure
        sys.exit(1)


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def directions(argv: list[str] | None = None) -> None:
    """attnedit-directions [model=<name>] [model.path=<id or dir>] [layers=all] [label=auto] out=<file.safetensors>"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print(_directions_help(argv))
        return
    guarded(lambda: _directions(argv))


def _directions_help(argv: list[str]) -> str:
    """Usage, the model configs and the composed conf/directions.yaml (with any overrides)."""
    rest = [a for a in argv if a not in ("-h", "--help")]
    models = sorted(p.stem for p in (Path(conf_dir()) / "model").glob("*.yaml"))
    try:
        config = OmegaConf.to_yaml(compose("directions", rest))
    except Exception as err:  # noqa: BLE001 - help still shows the usage
        config = f"(cannot compose with {rest}: {err})"
    return (f"usage: {directions.__doc__}\n\nSAD directions (eigenvectors of Wq^T Wq + Wk^T Wk + Wv^T Wv) of a "
            f"model's self-attention layers -> one safetensors file; key=value overrides on conf/directions.yaml.\n"
            f"model: {', '.join(models)}\n\nconfig:\n{config}")


def _directions(argv: list[str]) -> None:
    from hydra.utils import instantiate

    from attnedit.methods.directions import compute_directions, layer_weight_hash, select_layers, write_directions
    from attnedit.writable import check_writable_file

    cfg = compose("directions", argv)
    if OmegaConf.is_missing(cfg, "out"):
        raise AttneditError("give the output file: out=<path>.safetensors")
    if cfg.label not in ("none", "auto"):
        raise AttneditError(f"label={cfg.label!r} is not one of none, auto")
    check_writable_file(cfg.out, "out")  # before any computation
    backend = instantiate(cfg.model)
    layers = cfg.layers  # an interpolated default resolves to a plain list
    layers = OmegaConf.to_object(layers) if OmegaConf.is_config(layers) else layers
    layers = select_layers(backend.self_attention_layers(), layers)
    found = compute_directions(layers, Path(cfg.paths.cache_dir) / "directions")
    labels = _auto_labels(cfg, backend, list(layers)) if cfg.label == "auto" else None
    hashes = {name: layer_weight_hash(attn) for name, attn in layers.items()}
    path = write_directions(cfg.out, found, labels=labels, weight_hashes=hashes)
    print(f"model: {backend.name} ({backend.path}), weights {backend.describe()['weights_sha256_16']}")
    for name, d in found.items():
        share = d.share_of_trace(cfg.top)
        tops = ", ".join(f"{v:.4g} ({s:.1%})" for v, s in zip(d.eigenvalues[: cfg.top], share))
        print(f"{name}: dim {len(d.eigenvalues)}, top eigenvalues (share of trace): {tops}; "
              f"top {cfg.top} hold {share.sum():.1%}")
    for k, entry in (labels or {}).items():
        print(f"direction {k}: {entry['label']} at {'+' if entry.get('sign', 1) > 0 else '-'}alpha "
              f"(Directional CLIP {entry['score']:.3f}: '{entry['source']}' -> '{entry['target']}')")
    print(f"directions: {Path(path).resolve()}")


def _auto_labels(cfg: DictConfig, backend, layer_names: list[str]) -> dict:
    from hydra.utils import instantiate

    from attnedit.data.seeds import SeedDataset
    from attnedit.methods.labeling import FACE_ATTRIBUTES, label_directions, sad_renderer
    from attnedit.methods.sad import SAD

    spec = cfg.labeling
    method = SAD(layers=layer_names, directions=int(spec.directions), alphas=[spec.alpha],
                 alpha_scale=spec.alpha_scale, position=spec.position, window=list(spec.window))
    method.setup(backend, str(cfg.paths.cache_dir))  # the same cached directions as `found`
    probes = SeedDataset(int(spec.num_probes), int(spec.first_seed))
    probes = [probes.load(i) for i in probes.sample_ids()]
    clip = instantiate(spec.clip)
    vocabulary = [tuple(v) for v in spec.vocabulary] if spec.vocabulary else FACE_ATTRIBUTES
    labels = label_directions(sad_renderer(backend, method, probes), method.direction_ids, float(spec.alpha),
                              clip.embed_images, clip.embed_texts, vocabulary)
    for entry in labels.values():
        entry["labeled_by"] = f"directional_clip {clip.model_name}/{clip.pretrained} weights={clip.weights}"
    return labels


def tables(argv: list[str] | None = None) -> None:
    """attnedit-tables <run dir> [<run dir> ...] [--out DIR] [--pair A B ...]: write Markdown, CSV,
    LaTeX; print Markdown. Several runs (or --out) also get one comparison table (a row per
    method) and the editing-time table, in DIR (default: the first run's tables/). --pair
    (DCAG study): grid point B against A, paired on images, e.g. --pair dk=1,dv=1 dk=1.1,dv=1.15."""
    usage = "usage: attnedit-tables <run dir> [<run dir> ...] [--out DIR] [--pair <point A> <point B>]"
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(f"{usage}\n\n{' '.join(tables.__doc__.split(':', 1)[1].split())}")
        return
    out = None
    if "--out" in args:
        at = args.index("--out")
        if at + 1 >= len(args):
            _fail(AttneditError(f"--out needs a folder: {usage.removeprefix('usage: ')}"))
        out = args.pop(at + 1)
        args.pop(at)
    pairs = []
    while "--pair" in args:
        at = args.index("--pair")
        if len(args[at + 1:at + 3]) < 2:
            _fail(AttneditError("--pair needs two grid points, e.g. --pair dk=1,dv=1 dk=1.1,dv=1.15"))
        pairs.append((args[at + 1], args[at + 2]))
        del args[at:at + 3]
    if not args:
        _fail(AttneditError(f"give at least one run directory: {usage.removeprefix('usage: ')}"))
    from attnedit.report.runs import load_runs
    from attnedit.report.studies import cross_model_figure, write_study, write_tables

    try:
        runs = load_runs(args)  # each run read once, handed to its tables and the joint report
        for run in runs:
            write_tables(run)
            print((run.run_dir / "tables" / "tables.md").read_text())
            print(f"tables: {(run.run_dir / 'tables').resolve()}")
        if len(args) > 1 or out is not None or pairs:  # one report over all runs: the DCAG study or a comparison
            kind, folder, text = write_study(runs, out, pairs)
            print(text)
            print(f"{kind}: {folder.resolve()}")
            figure = cross_model_figure(runs, folder) if kind == "comparison" else None
            if figure is not None:  # e.g. lsun_sad: the same directions figure for every model
                print(f"figure: {figure.resolve()}")
    except Exception as err:  # noqa: BLE001 - attnedit.entry: the one line last (a bug keeps its traceback)
        _fail(err)


def evaluate(argv: list[str] | None = None) -> None:
    """attnedit-evaluate: score a folder of edited PIE-Bench images (see attnedit.evaluate).
    A Hydra app like attnedit-run on conf/evaluate/evaluate.yaml (key=value overrides, --help, --cfg
    job, -m); ``argv`` given: the same config composed without Hydra's app machinery."""
    from attnedit.evaluate import CONFIG_NAME, config_dir, evaluate as score, main, quote_ids

    if argv is not None:
        sys.exit(guarded(lambda: main(argv), EVALUATE_OUTPUTS))
    if "help" in sys.argv[1:]:  # the old spelling
        sys.argv[1:] = ["--help"]
    sys.argv[1:] = quote_ids(sys.argv[1:])
    hydra_app(lambda cfg: score(_without_hydra(cfg)), config_dir(), CONFIG_NAME, EVALUATE_OUTPUTS)


EVALUATE_OUTPUTS = "choose an out= path in a folder you can write to"


def _without_hydra(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg
