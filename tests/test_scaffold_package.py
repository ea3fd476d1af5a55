"""new-encoder -> check passes -> package writes a ZIP whose manifest matches; broken encoders are refused."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile

import pytest
import torch

from lalmbench.encoders.check import CheckOptions, run_checks
from lalmbench.encoders.package import PackageError, package_command
from lalmbench.encoders.scaffold import ScaffoldError, new_encoder_command

OPTIONS = CheckOptions(long_seconds=4.0, frame_rate_seconds=(1.0, 2.0, 4.0), timing_batch=2, timing_seconds=1.0)


def manifest_of(zip_path):
    with zipfile.ZipFile(zip_path) as archive:
        manifest = json.loads(archive.read("MANIFEST.json"))
        contents = {name: archive.read(name) for name in archive.namelist() if name != "MANIFEST.json"}
    return manifest, contents


def test_scaffold_checks_and_packages(tmp_path, capsys):
    repo = tmp_path / "submission"
    assert new_encoder_command(str(repo), class_name="TinyAudioEncoder") == 0
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        ".gitignore", "README.md", "requirements.txt", "submission.json", "tests/test_tiny_audio_encoder.py",
        "tiny_audio_encoder.py"]
    report = run_checks(str(repo / "tiny_audio_encoder.py"), options=CheckOptions())  # the full default checks
    assert report.ok and report.warnings == [], report.render_table()
    assert report.get("frame rate").data["frames_per_second"]["30"] == 25.0

    # The scaffolded pytest file runs the checker too.
    spec = importlib.util.spec_from_file_location("scaffold_test", repo / "tests" / "test_tiny_audio_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_encoder_passes_lalmbench_check()

    # Weights next to the encoder are loaded, and left out of the ZIP unless asked for.
    spec = importlib.util.spec_from_file_location("tiny_audio_encoder", repo / "tiny_audio_encoder.py")
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    trained = source.TinyAudioEncoder()
    with torch.no_grad():
        trained.conv2.bias.fill_(0.5)
    torch.save(trained.state_dict(), repo / "tiny_audio_encoder_weights.pt")
    assert torch.equal(source.TinyAudioEncoder().conv2.bias, torch.full((256,), 0.5))

    capsys.readouterr()
    assert package_command(str(repo), options=OPTIONS) == 0
    out = capsys.readouterr().out
    assert "Left out weight files ['tiny_audio_encoder_weights.pt']" in out
    zip_path = tmp_path / "submission.zip"
    manifest, contents = manifest_of(zip_path)
    assert manifest["encoder_file"] == "tiny_audio_encoder.py" and manifest["class_name"] == "TinyAudioEncoder"
    assert manifest["check"]["ok"] is True and manifest["lalmbench_version"]
    assert manifest["weights_left_out"] == ["tiny_audio_encoder_weights.pt"]
    assert sorted(contents) == sorted(entry["path"] for entry in manifest["files"])
    for entry in manifest["files"]:
        assert hashlib.sha256(contents[entry["path"]]).hexdigest() == entry["sha256"]
        assert len(contents[entry["path"]]) == entry["size"]

    # A second run never replaces the first ZIP: the default name moves on and says so.
    assert package_command(str(repo), include_weights=True, options=OPTIONS) == 0
    assert "already exists and was kept; writing submission-2.zip" in capsys.readouterr().out
    assert manifest_of(zip_path)[0] == manifest
    manifest2, contents2 = manifest_of(tmp_path / "submission-2.zip")
    assert "tiny_audio_encoder_weights.pt" in contents2 and manifest2["include_weights"] is True
    with pytest.raises(PackageError, match="already exists"):
        package_command(str(repo), output=str(zip_path), options=OPTIONS)


def test_broken_encoder_is_refused(tmp_path, capsys):
    repo = tmp_path / "broken"
    new_encoder_command(str(repo))
    encoder = repo / "my_encoder.py"
    encoder.write_text(encoder.read_text().replace("self.output_dim = dim", "self.output_dim = dim + 1"))
    assert package_command(str(repo), options=OPTIONS) == 1
    err = capsys.readouterr().err
    assert "fails 1 mandatory check(s); no ZIP written" in err and "feature dim" in err and "set output_dim" in err
    assert not (tmp_path / "broken.zip").exists()


def test_scaffold_refuses_non_empty_directory_and_bad_names(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty"):
        new_encoder_command(str(tmp_path / "taken"))
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]
    with pytest.raises(ScaffoldError, match="ending in 'Encoder'"):
        new_encoder_command(str(tmp_path / "new"), class_name="MyModel")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert new_encoder_command(str(tmp_path / "empty")) == 0


def test_missing_weights_download_fails_with_a_clear_message(tmp_path):
    repo = tmp_path / "offline"
    new_encoder_command(str(repo))
    encoder = repo / "my_encoder.py"
    # Port 9 on loopback: refused at once, like a machine without internet access.
    encoder.write_text(encoder.read_text().replace('WEIGHTS_URL = ""', 'WEIGHTS_URL = "http://127.0.0.1:9/w.pt"'))
    report = run_checks(str(encoder), options=OPTIONS)
    assert [r.name for r in report.failed] == ["constructor"]
    value = report.get("constructor").value
    assert "my_encoder_weights.pt is not bundled" in value and "http://127.0.0.1:9/w.pt" in value
    assert not list(repo.glob("*.part"))
