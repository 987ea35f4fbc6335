"""Console entry points: attnedit-run, attnedit-directions, attnedit-tables, attnedit-evaluate."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from attnedit.assets import ASSETS_DIR
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
    if isinstance(err, MissingMandatoryValue):  # a `???` key left unset, e.g. dataset.root
        err = f"the config key '{err.full_key}' has no value; pass {err.full_key}=<value> on the command line"
    print(f"attnedit: error: {err}", file=sys.stderr)
    sys.exit(2)


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

    _multirun_group(cfg)
    try:
        runner = Runner(cfg)
        if getattr(runner.backend, "random_weights", False):
            print(f"note: model '{runner.backend.name}' has RANDOM weights: this run shows the machinery, "
                  "not real edits. Use model=ddpm_celebahq (or another trained model) for real results.")
        run_dir = runner.run().resolve()
    except (AttneditError, MissingMandatoryValue) as err:
        _fail(err)
    tables = run_dir / "tables" / "tables.md"
    print(tables.read_text() if tables.exists() else "")
    figures = sorted((run_dir / "figures").glob("*.png"))
    print(f"tables: {tables.parent}")
    for figure in figures:
        print(f"figure: {figure}")
    print(f"run dir: {run_dir}")


def run() -> None:
    hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")(_run)()


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def directions(argv: list[str] | None = None) -> None:
    """attnedit-directions [model=<name>] [model.path=<id or dir>] [layers=all] out=<file.safetensors>"""
    from hydra.utils import instantiate

    from attnedit.methods.directions import compute_directions, layer_weight_hash, select_layers, write_directions

    try:
        cfg = compose("directions", list(sys.argv[1:] if argv is None else argv))
        if OmegaConf.is_missing(cfg, "out"):
            raise AttneditError("give the output file: out=<path>.safetensors")
        backend = instantiate(cfg.model)
        layers = cfg.layers  # an interpolated default resolves to a plain list
        layers = OmegaConf.to_object(layers) if OmegaConf.is_config(layers) else layers
        layers = select_layers(backend.self_attention_layers(), layers)
        found = compute_directions(layers, Path(cfg.paths.cache_dir) / "directions")
        if cfg.label not in ("none", "auto"):
            raise AttneditError(f"label={cfg.label!r} is not one of none, auto")
        labels = _auto_labels(cfg, backend, list(layers)) if cfg.label == "auto" else None
        hashes = {name: layer_weight_hash(attn) for name, attn in layers.items()}
        path = write_directions(cfg.out, found, labels=labels, weight_hashes=hashes)
    except (AttneditError, MissingMandatoryValue) as err:
        _fail(err)
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
    from attnedit.report.runs import load_runs
    from attnedit.report.studies import cross_model_figure, write_study, write_tables

    args = list(sys.argv[1:] if argv is None else argv)
    out = None
    if "--out" in args:
        at = args.index("--out")
        if at + 1 >= len(args):
            sys.exit("usage: attnedit-tables <run dir> [<run dir> ...] [--out DIR]")
        out = args.pop(at + 1)
        args.pop(at)
    pairs = []
    while "--pair" in args:
        at = args.index("--pair")
        if len(args[at + 1:at + 3]) < 2:
            sys.exit("usage: attnedit-tables <run dir> [...] --pair <point A> <point B>, e.g. --pair dk=1,dv=1 dk=1.1,dv=1")
        pairs.append((args[at + 1], args[at + 2]))
        del args[at:at + 3]
    if not args:
        sys.exit("usage: attnedit-tables <run dir> [<run dir> ...] [--out DIR]")
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
    except AttneditError as err:
        _fail(err)


def evaluate(argv: list[str] | None = None) -> None:
    """attnedit-evaluate: score a folder of edited PIE-Bench images (see attnedit.evaluate)."""
    from attnedit.evaluate import main

    try:
        sys.exit(main(argv))
    except (AttneditError, MissingMandatoryValue) as err:
        _fail(err)
