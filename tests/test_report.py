"""HTML report: sections, embedded PNGs, graceful gaps, and a real browser render when Chromium exists."""

from __future__ import annotations

import base64
import csv
import json
import math
import random
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from lalmbench.errors import LalmbenchError  # noqa: E402
from lalmbench.report import html as report_html  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"

def make_fake_run(run_dir: Path, with_log=True, many_labels=False):
    rng = random.Random(0)
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = [f"class {i}" for i in range(30)] if many_labels else ["dog", "rain", "car horn", "siren", "clapping"]
    preds = {}
    rows = []
    for i in range(60):
        ref = rng.choice(labels)
        pred = ref if rng.random() < 0.7 else rng.choice(labels + ["banana"])
        rows.append((pred, ref, f"esc_{i:03d}"))
    preds["eval_esc-50"] = rows
    tags = ["Music", "Speech", "Dog", "Bark", "Rain", "Vehicle"]
    rows = []
    for i in range(40):
        ref = ";".join(rng.sample(tags, rng.randint(1, 3)))
        pred = ";".join(rng.sample(tags, rng.randint(1, 2)))
        rows.append((pred, ref, f"fsd_{i:03d}"))
    preds["eval_fsd50k"] = rows
    caps = ["a dog barks in the distance", "rain falls on a tin roof", "a car passes by quickly", "people talk in a busy cafe"]
    preds["eval_clotho"] = [(rng.choice(caps), c, f"clotho_{i}") for i, c in enumerate(caps * 3)]
    preds["eval_librispeech"] = [("he hoped there would be stew for dinner", "he hoped there would be stew for dinner turnips", "ls_0"),
                                 ("the cat sat", "the cat sat on the mat", "ls_1"), ("hello world", "hello world", "ls_2")]
    metrics = {"eval_esc-50": ("Accuracy", {}), "eval_fsd50k": ("mAP", {"num_classes": 200}),
               "eval_clotho": ("FENSE", {}), "eval_librispeech": ("iWER", {})}
    scores = {"eval_esc-50": 0.70, "eval_fsd50k": 0.041, "eval_clotho": 0.31, "eval_librispeech": 0.52}
    for task, rs in preds.items():
        with open(run_dir / f"predictions_{task}.csv", "w", newline="") as h:
            w = csv.writer(h); w.writerow(["prediction", "reference", "key"]); w.writerows(rs)
    with open(run_dir / "scores.tsv", "w") as h:
        h.write("Task\tscore\tweight\n")
        for t, s in scores.items(): h.write(f"{t}\t{s}\t1\n")
        h.write(f"Overall\t{sum(scores.values())/4}\t4\n")
    if with_log:
        with open(run_dir / "train_log.csv", "w", newline="") as h:
            w = csv.writer(h); w.writerow(["step", "loss", "learning_rate", "grad_norm", "elapsed_seconds"])
            for step in range(1, 301):
                lr = 1e-4 * min(step / 20, (300 - step) / 280)
                w.writerow([step, 4 * math.exp(-step / 80) + 0.6 + rng.random() * 0.3, lr, 1.0, step * 0.5])
    summary = {"lalmbench_version": "0.1.0", "encoder": "examples/encoders/logmel.py", "encoder_name": "LogMelEncoder",
               "model_args": {}, "decoder": "tiny-random", "train_config": "task1", "eval_config": "task1",
               "steps": 300, "train_seconds": 150.0, "eval_seconds": 20.0, "bad_data": 0,
               "tasks": {t: {"metric": m, "metric_args": a, "score": scores[t], "weight": 1, "num_examples": len(preds[t])}
                         for t, (m, a) in metrics.items()},
               "overall": sum(scores.values()) / 4}
    (run_dir / "run_summary.json").write_text(json.dumps(summary))
    (run_dir / "COMPLETED").write_text("{}")
    return run_dir


def _embedded_pngs(page: str) -> list[bytes]:
    marker = 'src="data:image/png;base64,'
    images = []
    for chunk in page.split(marker)[1:]:
        images.append(base64.b64decode(chunk.split('"', 1)[0]))
    return images


def test_report_has_every_section_and_embedded_images(tmp_path):
    run_dir = make_fake_run(tmp_path / "run")
    path = report_html.write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    for text in ("lalmbench report: LogMelEncoder", "Scores beside the published baselines", "Dasheng-base",
                 "Whisper-base", "0.755", "Training loss", "confusion matrix", "AP per class", "Best predictions",
                 "Worst predictions", 'id="task-eval_clotho"', 'id="task-eval_librispeech"', "score 0.7000"):
        assert text in page, text
    images = _embedded_pngs(page)
    # scores, loss, the esc-50 confusion matrix, the fsd50k AP bars
    assert len(images) == 4 and all(image.startswith(PNG_MAGIC) for image in images)
    written = sorted(p.name for p in (run_dir / "report").glob("*.png"))
    assert written == ["ap_eval_fsd50k.png", "confusion_eval_esc-50.png", "loss.png", "scores.png"]
    assert (run_dir / "report" / "loss.png").read_bytes() in images
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    # the scores table names tasks as the chart does (esc-50, not eval_esc-50)
    assert '<td title="eval_esc-50">esc-50</td>' in page


def test_report_header_shows_a_config_path_by_its_file_name(tmp_path):
    run_dir = make_fake_run(tmp_path / "run")
    summary = json.loads((run_dir / "run_summary.json").read_text())
    summary.update(eval_config="/very/long/path/to/some/folder/eval.yaml", protocol="official")
    (run_dir / "run_summary.json").write_text(json.dumps(summary))
    page = report_html.write_report(run_dir).read_text()
    assert "<b>eval config</b>eval.yaml" in page and "/very/long/path" not in page
    assert "<b>protocol</b>official" in page and "<b>decoder</b>tiny-random" in page


def test_missing_files_become_notes(tmp_path):
    run_dir = make_fake_run(tmp_path / "run", with_log=False)
    (run_dir / "predictions_eval_clotho.csv").unlink()
    (run_dir / "run_summary.json").write_text("{not json")
    page = report_html.write_report(run_dir).read_text()
    assert "train_log.csv is missing" in page
    assert "predictions_eval_clotho.csv is missing" in page
    assert "run_summary.json is not valid JSON" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "scores.tsv is missing" in report_html.write_report(empty).read_text()
    with pytest.raises(LalmbenchError, match="does not exist"):
        report_html.write_report(tmp_path / "nowhere")


def test_broken_predictions_file_does_not_break_the_report(tmp_path):
    run_dir = make_fake_run(tmp_path / "run")
    summary = json.loads((run_dir / "run_summary.json").read_text())
    summary["tasks"]["eval_fsd50k"]["metric_args"] = {"num_classes": 2}  # fewer than the labels used
    (run_dir / "run_summary.json").write_text(json.dumps(summary))
    page = report_html.write_report(run_dir).read_text()
    assert "This section could not be built" in page and "num_classes" in page
    assert "confusion matrix" in page  # the other sections are still there


def test_confusion_keeps_top_labels_and_counts_the_rest_as_other():
    rows = [{"prediction": p, "reference": r} for p, r in
            [("Dog", "dog"), ("cat", "dog"), ("dog", "dog"), ("bird", "cat"), ("cat", "cat"), ("x", "bird")]]
    labels, counts, vocabulary = report_html.confusion(rows, top=2)
    # reference frequency: dog 3, cat 2, bird 1 -> the top two, in reading order, then (other)
    assert labels == ["cat", "dog", report_html.OTHER_LABEL] and vocabulary == 3
    assert counts == [[1, 0, 1], [1, 2, 0], [0, 0, 1]]


def test_confusion_rows_follow_numbers_by_value():
    rows = [{"prediction": str(n), "reference": str(n)} for n in (10, 2, 1, 2, 10, 3)]
    labels, _, _ = report_html.confusion(rows, top=10)
    assert labels == ["1", "2", "3", "10"]


def test_example_scores_are_hand_computed():
    assert report_html.example_score("Accuracy", "Dog!", "dog") == 1.0
    assert report_html.example_score("mAP", "a;b", "b;c") == pytest.approx(1 / 3)
    # one deletion out of 6 reference words
    assert report_html.example_score("iWER", "the cat sat on mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    # word F1: 2 common of 3 predicted and 4 reference words -> 2PR/(P+R) = 2*(2/3)*(1/2)/(7/6) = 4/7
    assert report_html.example_score("FENSE", "a dog barks", "a dog howls loudly") == pytest.approx(4 / 7)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium for a headless render")
def test_report_renders_in_headless_chromium(tmp_path):
    run_dir = make_fake_run(tmp_path / "run")
    page = report_html.write_report(run_dir)
    shot = tmp_path / "shot.png"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 50_000  # a blank page compresses to a few KB


def test_without_matplotlib_the_report_keeps_its_tables(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "matplotlib" else real_find_spec(name, *args))
    run_dir = make_fake_run(tmp_path / "run")
    page = report_html.write_report(run_dir).read_text()
    assert "lalmbench[report]" in page and "Best predictions" in page and "<td class=num><b>0.7000</b>" in page
    assert _embedded_pngs(page) == [] and not (run_dir / "report").exists()


def test_large_vocabulary_confusion_is_limited(tmp_path):
    run_dir = make_fake_run(tmp_path / "run", many_labels=True)
    page = report_html.write_report(run_dir).read_text()
    assert f"the {report_html.CONFUSION_TOP_LABELS} most frequent are shown" in page


def test_text_from_the_run_directory_is_escaped(tmp_path):
    run_dir = make_fake_run(tmp_path / "run")
    with open(run_dir / "predictions_eval_librispeech.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["prediction", "reference", "key"], ["<script>alert(1)</script>", "a & b", "k<1>"]])
    page = report_html.write_report(run_dir).read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>k&lt;1&gt;</td>" in page and "a &amp; b" in page
