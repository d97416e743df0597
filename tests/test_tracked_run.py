"""One small `python -m train … logger=wandb` run and what it leaves: wandb's offline run (the eval grid and
cells, the scores table, the final LoRA and its config as an artifact, the resolved config; read back from
its own `.wandb` log and files folder, with nothing reaching for the network) and `report.html`, opened from
disk by a real headless Chromium. Then how a failed or interrupted run closes its tracker."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import wandb
from accelerate import Accelerator
from PIL import Image

from inference.infotext import save_png
from scripts.report_screenshot import find_chromium, headless_chromium
from tests.test_cli import run_train
from tests.test_resume import start_train
from tests.test_run_report import report_command
from tests.wandb_records import offline_run, records_of
from train.config import LoggerConfig
from train.signals import TrainingInterrupted
from train.tracking import close_trackers, start_trackers

SMALL = [
    "+experiment=char_lora", "logger=wandb", "dataset.toy_images=2", "dataset.toy_repeats=1",
    "dataset.toy_reg_images=0", "training.batch_size=2", "training.max_train_steps=4",
    "training.save_every_n_steps=2", "eval.steps=2", "eval.seeds=[1]", "eval.weights=[0,1]",
    'eval.prompts=["sls star, blue background, large","red circle, <b>blue</b> background"]',
]  # fmt: skip


class ConnectionCounter:
    """A local port that counts the connections made to it: the proxy and wandb server of a run that
    must stay offline (any attempt to reach the network would land here)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def env(self) -> dict[str, str]:
        url = self.url
        return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
                "NO_PROXY": "", "no_proxy": "", "WANDB_BASE_URL": url, "WANDB_MODE": "offline"}  # fmt: skip

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """One small run with logger=wandb, its network pointed at a counting port; (run folder, result, count)."""
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    counter = ConnectionCounter()
    try:
        result = run_train(run_dir, *SMALL, env=counter.env())
    finally:
        counter.close()
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result, counter.connections


def md5_base64(path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_offline_run_holds_grid_cells_scores_table_and_lora_artifact(wandb_run):
    run_dir, _, connections = wandb_run
    assert connections == 0  # no proxy or server request: the run stayed offline
    files = offline_run(run_dir) / "files"
    logged = [item.path for record in records_of(run_dir, "files") for item in record.files]
    grids = [p for p in logged if p.startswith("media/images/eval/grid_")]
    cells = [p for p in logged if p.startswith("media/images/eval/cells_")]
    assert len(grids) == 1 and len(cells) == 4  # 2 prompts x 2 weights
    assert all((files / p).stat().st_size > 0 for p in grids + cells)

    (table_file,) = [p for p in logged if p.startswith("media/table/eval/scores_")]
    table = json.loads((files / table_file).read_text())
    scores = json.loads((run_dir / "scores.json").read_text())["weight"]
    assert table["columns"] == ["weight", "concept_score", "base_fidelity"]
    assert table["data"] == [[float(w), v["concept_score"], v["base_fidelity"]] for w, v in scores.items()]

    (lora,) = [a for a in records_of(run_dir, "artifact") if a.type == "lora"]
    entries = {entry.path: entry for entry in lora.manifest.contents}
    assert lora.name == "char_lora" and set(entries) == {"char_lora.safetensors", "config.yaml"}
    final = run_dir / "char_lora.safetensors"
    assert entries["char_lora.safetensors"].digest == md5_base64(final)
    assert entries["char_lora.safetensors"].size == final.stat().st_size
    assert json.loads(lora.metadata)["steps"] == 4 and json.loads(lora.metadata)["scores"] == scores

    config = {
        item.key: json.loads(item.value_json) for r in records_of(run_dir, "config") for item in r.update
    }
    assert config["name"] == "char_lora" and config["network"]["dim"] == 8
    assert config["training"]["max_train_steps"] == 4 and config["eval"]["weights"] == [0.0, 1.0]
    (finished,) = records_of(run_dir, "exit")
    assert finished.exit_code == 0


@pytest.mark.slow
def test_a_diverged_run_closes_its_tracker_with_the_cli_exit_code(tmp_path):
    run_dir = tmp_path / "nan"
    result = run_train(
        run_dir, *SMALL, "eval.enabled=false", "optimizer.lr=1e12", "optimizer.unet_lr=1e12",
        "optimizer.text_encoder_lr=1e12",
    )  # fmt: skip
    assert result.returncode == 2 and "error: loss is" in result.stderr, result.stderr[-3000:]
    (finished,) = records_of(run_dir, "exit")
    assert finished.exit_code == 2
    assert not [a for a in records_of(run_dir, "artifact") if a.type == "lora"]  # no final LoRA to log
    report = (run_dir / "report.html").read_text()
    assert "stopped: loss is" in report and "at step" in report and "unfinished" not in report


def test_an_interruption_closes_the_tracker_with_its_signal_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    accelerator = Accelerator(log_with="wandb")
    start_trackers(accelerator, LoggerConfig(kind="wandb"), tmp_path, "stopped", {"seed": 1})
    close_trackers(accelerator, TrainingInterrupted("SIGTERM: stopped after step 3", 143))
    wandb.teardown()  # what the command's exit does: the service writes out the run's last records
    (finished,) = records_of(tmp_path, "exit")
    assert finished.exit_code == 143 and accelerator.trackers == []


@pytest.mark.slow
def test_sigterm_mid_run_closes_the_tracker_and_writes_the_report(tmp_path):
    run_dir = tmp_path / "stopped"
    process = start_train(run_dir, *SMALL, "training.max_train_steps=400", "eval.enabled=false")
    metrics = run_dir / "metrics.jsonl"
    while process.poll() is None and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]
    (finished,) = records_of(run_dir, "exit")
    assert finished.exit_code == 143
    report = (run_dir / "report.html").read_text()
    assert "stopped: SIGTERM" in report and "char_lora-step" in report  # the saved step file is linked


def add_samples(run_dir: Path) -> None:
    """Samples as another engineer's sampler writes them: infotext with markup in the prompt, a subfolder,
    a space in a file name."""
    (run_dir / "samples" / "step 2").mkdir(parents=True)
    save_png(
        Image.new("RGB", (24, 24), "red"),
        run_dir / "samples" / "s0.png",
        "a <script>x</script> star\nSteps: 2",
    )
    Image.new("RGB", (24, 24), "blue").save(run_dir / "samples" / "step 2" / "s 1.png")


def test_report_opens_offline_in_chromium_with_every_picture_and_link(wandb_run, tmp_path):
    original, result, _ = wandb_run
    assert f"report:     {original / 'report.html'}" in result.stdout
    run_dir = tmp_path / "moved run"  # a copy elsewhere: every link is relative
    shutil.copytree(original, run_dir, ignore=shutil.ignore_patterns("wandb", "dataset"))
    add_samples(run_dir)
    rewritten = report_command(f"run={run_dir}")
    assert rewritten.returncode == 0 and "report:" in rewritten.stdout, rewritten.stderr[-2000:]

    found = find_chromium()
    if found is None:
        pytest.skip(
            "no headless browser here: Chromium and chromedriver are missing, and `make install` could not "
            "install them (it needs root and apt-get)"
        )
    driver = headless_chromium(*found)
    try:
        driver.get((run_dir / "report.html").as_uri())
        images = driver.find_elements("tag name", "img")
        sources = sorted(unquote(urlparse(i.get_attribute("src")).path) for i in images)
        assert sources == sorted(
            str(run_dir / p) for p in ("eval/grid.png", "samples/s0.png", "samples/step 2/s 1.png")
        )
        widths = [
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
            for i in images
        ]
        assert all(w and w > 0 for w in widths)
        links = [
            unquote(urlparse(a.get_attribute("href")).path) for a in driver.find_elements("tag name", "a")
        ]
        assert (
            str(run_dir / "char_lora.safetensors") in links
            and str(run_dir / "char_lora-step00000002.safetensors") in links
        )
        assert all(Path(link).is_file() for link in links)
        assert len(driver.find_elements("css selector", "svg.chart polyline")) >= 4  # loss and lr curves
        assert (
            driver.find_elements("tag name", "script") == [] and driver.find_elements("tag name", "b") == []
        )
        assert "a <script>x</script> star" in driver.find_element("css selector", ".samples").text
        urls = driver.execute_script(
            "return [...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)"
        )
        assert urls and all(url.startswith(("file://", "data:")) for url in urls)  # nothing from a network
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
