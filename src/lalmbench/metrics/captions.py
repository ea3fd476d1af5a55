"""FENSE and DATE caption scores, computed by the organizers' `mecat` package (docs/protocol.md, "Evaluation").

Each text is normalized like every other metric (`normalize_text`), wrapped in a one-element list, and
handed to `mecat.evaluate(..., task='caption', metrics='fense'|'date', subtask='long')`; the score is
the row of subtask `content_long`.

mecat asks for two models by fixed names and fetches them over the network when they are not on disk:
- the Sentence-BERT model `paraphrase-TinyBERT-L6-v2`, passed to `SentenceTransformer`, which looks it
  up on the Hugging Face Hub as `sentence-transformers/paraphrase-TinyBERT-L6-v2` (HF cache, or
  $SENTENCE_TRANSFORMERS_HOME);
- the FENSE error checker `echecker_clotho_audiocaps_base`, a torch checkpoint read from
  `$FENSE_DATA/echecker_clotho_audiocaps_base.ckpt` (default `~/.fense_data`; downloaded from GitHub
  when absent). The checkpoint names its BERT backbone (`model_type`, e.g. `bert-base-uncased`),
  which transformers loads by that name, so the backbone must be in the HF cache too (or the name
  must be a local directory).

lalmbench resolves both to local files before mecat runs (`locate_caption_models`), so a run never
downloads in the middle of evaluation, and lets either be replaced:
- `LALMBENCH_SBERT_MODEL` / kwarg `sbert_model`: a sentence-transformers model directory, or a hub id
  already in the cache;
- `LALMBENCH_ECHECKER_MODEL` / kwarg `echecker_model`: the checkpoint file, or a directory holding
  `echecker_clotho_audiocaps_base.ckpt`.
While mecat runs, `FENSE_DATA` points at a directory where the checkpoint has mecat's file name, and
mecat's `SentenceTransformer` is given the resolved directory instead of the bare model name.
`caption_models_preflight` runs the same resolution before training, so a missing model stops a run
at its start with the commands that fetch it.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lalmbench.errors import CaptionModelsError
from lalmbench.metrics.normalize import normalize_text

CAPTION_METRICS = ("FENSE", "DATE")

SBERT_NAME = "paraphrase-TinyBERT-L6-v2"  # the name mecat passes to SentenceTransformer
SBERT_HUB_ID = f"sentence-transformers/{SBERT_NAME}"
ECHECKER_NAME = "echecker_clotho_audiocaps_base"
ECHECKER_FILE = f"{ECHECKER_NAME}.ckpt"
ECHECKER_URL = f"https://github.com/blmoistawinde/fense/releases/download/V0.1/{ECHECKER_FILE}"
ECHECKER_SHA256 = "1a719f090af70614bbdb9f9437530b7e133c48cfa4a58d964de0d47fc974a2fa"

SBERT_ENV = "LALMBENCH_SBERT_MODEL"
ECHECKER_ENV = "LALMBENCH_ECHECKER_MODEL"

MECAT_SUBTASK_ROW = "content_long"


@dataclass(frozen=True)
class CaptionModels:
    """Local locations of everything mecat loads for FENSE and DATE."""

    sbert_dir: Path  # a sentence-transformers model directory (modules.json inside)
    echecker_checkpoint: Path  # the error checker .ckpt (dict with model_type, num_classes, state_dict)
    echecker_backbone: str  # the checkpoint's model_type: a local directory or a cached hub id


def _fetch_help() -> str:
    return (
        "Fetch them once on a machine with internet access:\n"
        f"  hf download {SBERT_HUB_ID}            (or set {SBERT_ENV}=<sentence-transformers model dir>)\n"
        f"  mkdir -p ~/.fense_data && curl -L -o ~/.fense_data/{ECHECKER_FILE} {ECHECKER_URL}\n"
        f"      (sha256 {ECHECKER_SHA256}; or set {ECHECKER_ENV}=<path to the .ckpt>, or FENSE_DATA=<dir>)\n"
        "  hf download bert-base-uncased            (the error checker's backbone)\n"
        "Then copy ~/.cache/huggingface and ~/.fense_data to the machine that runs lalmbench."
    )


def _cached_hub_snapshot(repo_id: str, cache_dir: str | None, required_file: str) -> Path | None:
    """The local snapshot directory of `repo_id` if the HF cache holds it (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, invalid repo id, unreadable cache: all mean "not here"
        return None
    return path if (path / required_file).is_file() else None


def _resolve_sbert(sbert_model: str | None, problems: list[str]) -> Path | None:
    value = sbert_model or os.environ.get(SBERT_ENV) or SBERT_HUB_ID
    if os.path.isdir(value):
        if (Path(value) / "modules.json").is_file() or (Path(value) / "config.json").is_file():
            return Path(value)
        problems.append(f"Sentence-BERT model directory {value} has neither modules.json nor config.json; "
                        "point it at a directory written by SentenceTransformer.save or `hf download`")
        return None
    repo_id = value if "/" in value else f"sentence-transformers/{value}"
    found = _cached_hub_snapshot(repo_id, os.environ.get("SENTENCE_TRANSFORMERS_HOME"), "modules.json")
    if found is None:
        found = _cached_hub_snapshot(repo_id, None, "modules.json")
    if found is None:
        origin = f" (from {SBERT_ENV})" if not sbert_model and os.environ.get(SBERT_ENV) else ""
        problems.append(f"Sentence-BERT model {repo_id!r}{origin} is neither a local directory nor in the "
                        "Hugging Face cache")
    return found


def _resolve_echecker(echecker_model: str | None, problems: list[str]) -> Path | None:
    value = echecker_model or os.environ.get(ECHECKER_ENV)
    if value is None:
        data_home = os.path.expanduser(os.environ.get("FENSE_DATA", os.path.join("~", ".fense_data")))
        value = os.path.join(data_home, ECHECKER_FILE)
    path = Path(value)
    if path.is_dir():
        path = path / ECHECKER_FILE
    if not path.is_file():
        problems.append(f"error checker {ECHECKER_NAME!r}: {path} does not exist")
        return None
    return path


def _checkpoint_backbone(path: Path, problems: list[str]) -> str | None:
    import torch

    try:
        try:  # mmap keeps this cheap for the 440 MB official checkpoint
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) checkpoints cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        problems.append(f"error checker {path} cannot be read ({type(exc).__name__}: {exc}); re-download it")
        return None
    if not isinstance(state, dict) or not {"model_type", "num_classes", "state_dict"} <= set(state):
        problems.append(f"error checker {path} is not a FENSE checkpoint (expected a dict with model_type, "
                        "num_classes and state_dict)")
        return None
    backbone = str(state["model_type"])
    if os.path.isdir(backbone):
        return backbone
    if _cached_hub_snapshot(backbone, None, "config.json") is None:
        problems.append(f"the error checker's backbone {backbone!r} (named inside {path}) is neither a local "
                        "directory nor in the Hugging Face cache")
        return None
    return backbone


def locate_caption_models(sbert_model: str | None = None, echecker_model: str | None = None) -> CaptionModels:
    """Resolve both models to local files, or raise CaptionModelsError naming every missing piece."""
    problems: list[str] = []
    sbert_dir = _resolve_sbert(sbert_model, problems)
    checkpoint = _resolve_echecker(echecker_model, problems)
    backbone = _checkpoint_backbone(checkpoint, problems) if checkpoint is not None else None
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise CaptionModelsError(f"FENSE/DATE need models that are not available offline:\n{listing}\n"
                                 f"{_fetch_help()}")
    return CaptionModels(sbert_dir=sbert_dir, echecker_checkpoint=checkpoint, echecker_backbone=backbone)


def _require_packages() -> None:
    missing = []
    for module in ("mecat", "sentence_transformers"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise CaptionModelsError(f"FENSE/DATE need the Python packages {', '.join(missing)}, which are not "
                                 "installed; install them with: pip install 'lalmbench[captions]'")


def caption_models_preflight(metric_names: list[str], sbert_model: str | None = None,
                             echecker_model: str | None = None) -> None:
    """Fail before training when a FENSE or DATE task is configured but cannot be scored offline."""
    if not set(CAPTION_METRICS) & set(metric_names):
        return
    _require_packages()
    locate_caption_models(sbert_model, echecker_model)


def _import_mecat_date():
    # mecat.DATE calls torch.set_num_threads(1) when first imported; keep the caller's setting.
    import torch

    threads = torch.get_num_threads()
    import mecat.DATE

    torch.set_num_threads(threads)
    return mecat.DATE


@contextlib.contextmanager
def _mecat_sees(models: CaptionModels) -> Iterator[None]:
    """Point mecat's fixed model names at the resolved local files for the duration of one call."""
    from loguru import logger
    from sentence_transformers import SentenceTransformer

    date_module = _import_mecat_date()
    patched_loader = date_module.SentenceTransformer

    def load_sbert(name_or_path, *args, **kwargs):
        if name_or_path in (SBERT_NAME, SBERT_HUB_ID):
            name_or_path = str(models.sbert_dir)
        return SentenceTransformer(name_or_path, *args, **kwargs)

    old_fense_data = os.environ.get("FENSE_DATA")
    with tempfile.TemporaryDirectory(prefix="lalmbench-fense-") as data_home:
        checkpoint = models.echecker_checkpoint.resolve()
        if checkpoint.name == ECHECKER_FILE:
            data_home = str(checkpoint.parent)
        else:
            os.symlink(checkpoint, os.path.join(data_home, ECHECKER_FILE))
        os.environ["FENSE_DATA"] = data_home
        date_module.SentenceTransformer = load_sbert
        logger.disable("mecat")  # per-step INFO lines; errors still raise
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mecat prints a warning banner
                yield
        finally:
            logger.enable("mecat")
            date_module.SentenceTransformer = patched_loader
            if old_fense_data is None:
                os.environ.pop("FENSE_DATA", None)
            else:
                os.environ["FENSE_DATA"] = old_fense_data


def _nothing_said(metric: str, predicted: list[list[str]]) -> bool:
    """DATE of predictions that are all empty once normalized (a decoder answering only punctuation):
    mecat cannot weigh a set with no word and stops with a TypeError, so the score is taken as what it
    is, 0 (an empty caption is similar to no reference)."""
    return metric == "date" and bool(predicted) and not any(text for (text,) in predicted)


def _mecat_score(metric: str, predictions: list[str], references: list[str], sbert_model: str | None = None,
                 echecker_model: str | None = None, device: str | None = None) -> float:
    _require_packages()
    models = locate_caption_models(sbert_model, echecker_model)
    predicted = [[normalize_text(text)] for text in predictions]
    referenced = [[normalize_text(text)] for text in references]
    if _nothing_said(metric, predicted):
        return 0.0
    import mecat

    extra = {"device": device} if device else {}
    with _mecat_sees(models):
        table = mecat.evaluate(predicted_data=predicted, reference_data=referenced, task="caption",
                               metrics=metric, subtask="long", **extra)
    rows = table[table["subtask"] == MECAT_SUBTASK_ROW]
    if len(rows) != 1 or metric not in rows.columns:
        raise RuntimeError(f"mecat returned no {metric!r} score for subtask {MECAT_SUBTASK_ROW!r}; "
                           f"its table was:\n{table}")
    return float(rows[metric].iloc[0])


def fense(predictions: list[str], references: list[str], **kwargs) -> float:
    """FENSE (Clotho, Song Describer). kwargs: sbert_model, echecker_model, device."""
    return _mecat_score("fense", predictions, references, **kwargs)


def date(predictions: list[str], references: list[str], **kwargs) -> float:
    """DATE (MECAT). kwargs: sbert_model, echecker_model, device."""
    return _mecat_score("date", predictions, references, **kwargs)


def caption_item_scores(metric: str, predictions: list[str], references: list[str], sbert_model: str | None = None,
                        echecker_model: str | None = None, device: str | None = None) -> list[float]:
    """mecat's per-item FENSE or DATE scores, in input order; their mean is the task score.

    The same mecat call as `fense`/`date`, asked to keep its details: mecat writes each item's
    similarity (FENSE) or DATE into a table in a scratch directory, read back here. DATE's per-item
    discrimination is ranked against every reference of this call. Used for confidence intervals
    (report/confidence.py).
    """
    import glob

    import pandas as pd

    if metric not in CAPTION_METRICS:
        raise ValueError(f"per-item scores exist for {', '.join(CAPTION_METRICS)}, not {metric!r}")
    _require_packages()
    models = locate_caption_models(sbert_model, echecker_model)
    name = metric.lower()
    if _nothing_said(name, [[normalize_text(t)] for t in predictions]):
        return [0.0] * len(predictions)
    column = "similarity" if name == "fense" else "date"  # mecat's detail table columns
    import mecat

    extra = {"device": device} if device else {}
    with tempfile.TemporaryDirectory(prefix="lalmbench-items-") as details, _mecat_sees(models):
        table = mecat.evaluate(predicted_data=[[normalize_text(t)] for t in predictions],
                               reference_data=[[normalize_text(t)] for t in references], task="caption",
                               metrics=name, subtask="long", output_dir=details, save_details=True, **extra)
        found = glob.glob(os.path.join(details, f"{name}_results_*.csv"))
        if len(found) != 1:
            raise RuntimeError(f"mecat kept no single per-item {metric} table in its details ({found})")
        items = pd.read_csv(found[0])[column].astype(float).tolist()
    rows = table[table["subtask"] == MECAT_SUBTASK_ROW]
    if len(items) != len(predictions) or len(rows) != 1:
        raise RuntimeError(f"mecat returned {len(items)} per-item {metric} scores for {len(predictions)} items")
    if abs(sum(items) / len(items) - float(rows[name].iloc[0])) > 6e-5:  # mecat rounds the mean to 4 places
        raise RuntimeError(f"mecat's per-item {metric} scores average to {sum(items) / len(items):.6f}, its "
                           f"score is {float(rows[name].iloc[0]):.4f}; the detail table is not in input order")
    return items
