"""Exact resume: SIGKILL at random moments (saving included) or Ctrl-C, then resume=auto, gives the bytes of an
uninterrupted run; a finished run says so and exits 0; a state made for another network is refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from inference.lora import load_lora_file

from .test_buckets_training import BUCKETS, folders  # noqa: F401  (the mixed-size folder fixture)
from .test_cli import REPO, run_train

NAME = "resumed"


def resumable(train: Path, reg: Path) -> list[str]:
    """Buckets of three shapes, cached latents and LoCon layers, a state every 3 steps: 3 epochs of 11 steps."""
    overrides = [f"dataset.{key}={value}" for key, value in BUCKETS.items()]
    overrides += [f"dataset.train_dir={train}", f"dataset.reg_dir={reg}", "dataset=folders", "model=tiny"]
    overrides += ["dataset.enable_bucket=true", "dataset.cache_latents=true", "network=locon"]
    overrides += ["training.batch_size=2", "training.max_train_epochs=3", "training.save_every_n_steps=3"]
    overrides += ["training.save_state=true", "logger=none", "eval.enabled=false", f"name={NAME}"]
    return overrides


def start_train(run_dir: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "train", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def header(run_dir: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(run_dir / f"{NAME}.safetensors"), framework="pt") as f:
        return f.metadata()


def steps_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"loss/current"' in line for line in path.read_text().splitlines())


def kill_after_step(process: subprocess.Popen, run_dir: Path, step: int) -> None:
    """SIGKILL as soon as `step` steps are logged (the run is then somewhere inside a later step)."""
    while process.poll() is None and steps_logged(run_dir) < step:
        time.sleep(0.002)
    process.kill()


def kill_while_saving(process: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL the moment a temporary file or folder of a save shows up in the run folder."""
    while process.poll() is None:
        if any(".tmp" in name for name in os.listdir(run_dir)):
            process.kill()
            return
        time.sleep(0.0005)
    pytest.fail("the run ended before a save could be caught half-way")


@pytest.fixture(scope="module")
def uninterrupted(folders, tmp_path_factory) -> tuple[Path, list[str]]:  # noqa: F811
    overrides = resumable(*folders)
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    result = run_train(run_dir, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, overrides


def test_sigkill_three_times_then_resume_auto_gives_the_same_bytes(uninterrupted, tmp_path):
    whole, overrides = uninterrupted
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    chooser = random.Random(20261206)
    kills = [
        lambda p: kill_after_step(p, run_dir, chooser.randint(4, 9)),  # inside epoch 1
        lambda p: kill_while_saving(p, run_dir),
        lambda p: kill_after_step(p, run_dir, chooser.randint(24, 30)),  # inside epoch 3
    ]
    for kill in kills:
        process = start_train(run_dir, *overrides, "resume=auto")
        kill(process)
        process.wait(timeout=120)
        assert process.returncode == -signal.SIGKILL
    final = run_train(run_dir, *overrides, "resume=auto")
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming from" in final.stdout
    assert (run_dir / f"{NAME}.safetensors").read_bytes() == (whole / f"{NAME}.safetensors").read_bytes()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]

    again = run_train(run_dir, *overrides, "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    total = header(whole)["ss_max_train_steps"]
    assert f"already finished at step {total} of {total}" in again.stdout


def test_ctrl_c_saves_then_resume_auto_gives_the_same_bytes(uninterrupted, tmp_path):
    whole, overrides = uninterrupted
    run_dir = tmp_path / "stopped"
    run_dir.mkdir()
    process = start_train(run_dir, *overrides)
    while process.poll() is None and steps_logged(run_dir) < 5:
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "resume=auto" in errors[0] and "Traceback" not in stderr
    saved = sorted(run_dir.glob(f"{NAME}-step*.safetensors"))[-1]
    assert saved.with_name(f"{saved.stem}-state").is_dir()
    final = run_train(run_dir, *overrides, "resume=auto")
    assert final.returncode == 0, final.stderr[-3000:]
    assert (run_dir / f"{NAME}.safetensors").read_bytes() == (whole / f"{NAME}.safetensors").read_bytes()


def test_extending_epochs_continues_and_a_state_of_another_network_is_refused(uninterrupted, tmp_path):
    whole, overrides = uninterrupted
    state = whole / f"{NAME}-state"
    longer = run_train(tmp_path / "longer", *overrides, "training.max_train_epochs=4", f"resume={state}")
    assert longer.returncode == 0, longer.stderr[-3000:]
    per_epoch = header(whole)["ss_num_batches_per_epoch"]
    assert "resuming from" in longer.stdout and f"Trained {per_epoch} steps" in longer.stdout
    again = run_train(tmp_path / "again", *overrides, f"resume={state}")  # finished: its run's objective
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished at step" in again.stdout
    other = run_train(
        tmp_path / "other", *overrides, "training.max_train_epochs=4", "network.conv_dim=2", f"resume={state}"
    )
    assert other.returncode == 2
    assert "does not fit this run" in other.stderr and "conv_dim" in other.stderr
    assert "Traceback" not in other.stderr
    middle = sorted(whole.glob(f"{NAME}-step*-state"))[0]
    sgd = run_train(tmp_path / "sgd", *overrides, "optimizer=sgd_nesterov", f"resume={middle}")
    assert sgd.returncode == 2 and "Traceback" not in sgd.stderr  # AdamW's moments mean nothing to SGD
    assert "optimizer: state torch.optim.adamw.AdamW, this run torch.optim.sgd.SGD" in sgd.stderr


def test_a_state_holding_other_objects_than_tensors_is_not_loaded(tmp_path):
    """weights_only=True refuses a pickle that could run code; the user gets one line (a ResumeError), nothing
    runs."""
    import pickle

    from safetensors.torch import save_file

    from train.state import ResumeError, load_state

    state = _finished_folder(tmp_path / "run", final_steps=4, state_step=4)
    save_file({"x": torch.zeros(1)}, str(state / "network.safetensors"))
    (state / "optimizer.pt").write_bytes(pickle.dumps({"state": {}, "param_groups": [Path("/etc/passwd")]}))
    with pytest.raises(ResumeError) as caught:
        load_state(state)
    assert str(caught.value) == (
        f"the training state in {state} holds objects other than tensors and plain values, which are not "
        "loaded (they could run code): resume from a state this program wrote"
    )


@pytest.mark.slow  # make test-full; the fast suite keeps one run per resume path
def test_two_processes_resume_each_from_its_own_random_streams(folders, tmp_path):  # noqa: F811
    """With buckets the two processes draw different amounts of noise, so their random streams part ways;
    a state holds each one's (rng-0.pt, rng-1.pt) and a resumed run continues to the same bytes."""
    # accelerate launch --cpu starts one process (several need MPI); torchrun starts two gloo processes
    # that accelerate joins (ACCELERATE_USE_CPU), as on a multi-CPU machine.
    launcher = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2"]
    overrides = [o for o in resumable(*folders) if not o.startswith("training.max_train_epochs")]
    overrides += ["training.max_train_epochs=2", "scheduler=linear"]
    env = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    whole = run_train(tmp_path / "whole", *overrides, env=env, launcher=launcher)
    assert whole.returncode == 0, whole.stderr[-3000:]
    states = sorted((tmp_path / "whole").glob(f"{NAME}-step*-state"))
    assert states, "no intermediate state was written"
    middle = states[len(states) // 2]
    assert sorted(p.name for p in middle.glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    total = int(header(tmp_path / "whole")["ss_max_train_steps"])
    assert total == steps_logged(tmp_path / "whole")
    # the linear schedule spans the whole run, though accelerate steps it once per process
    records = map(json.loads, (tmp_path / "whole" / "metrics.jsonl").open())
    lrs = {r["step"]: r["lr/unet"] for r in records if "lr/unet" in r}  # the rate after each step
    assert lrs[total] == 0 and lrs[total - 1] > 0
    resumed = run_train(tmp_path / "resumed", *overrides, f"resume={middle}", env=env, launcher=launcher)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    final = f"{NAME}.safetensors"
    assert (tmp_path / "resumed" / final).read_bytes() == (tmp_path / "whole" / final).read_bytes()


@pytest.mark.parametrize(
    "optimizer",
    [  # make test-full (the fast suite resumes AdamW's state)
        pytest.param(["optimizer=adamw8bit"], id="AdamW8bit", marks=pytest.mark.slow),  # 8-bit moments, maps
        pytest.param(["optimizer=prodigy"], id="Prodigy", marks=pytest.mark.slow),  # d lives in the groups
        pytest.param(  # saves averaged weights, trains on others
            ["optimizer=adamw_schedulefree", "scheduler=constant"],
            id="AdamWScheduleFree",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_other_optimizers_resume_to_the_same_bytes(folders, tmp_path, optimizer):  # noqa: F811
    overrides = [o for o in resumable(*folders) if not o.startswith("training.max_train_epochs")]
    overrides += ["training.max_train_epochs=2", *optimizer]
    whole = run_train(tmp_path / "whole", *overrides)
    assert whole.returncode == 0, whole.stderr[-3000:]
    states = sorted((tmp_path / "whole").glob(f"{NAME}-step*-state"))
    resumed = run_train(tmp_path / "resumed", *overrides, f"resume={states[len(states) // 2]}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = f"{NAME}.safetensors"
    assert (tmp_path / "resumed" / final).read_bytes() == (tmp_path / "whole" / final).read_bytes()


@pytest.mark.slow  # make test-full: the fast suite resumes DoRA, the other network of its own modules
@pytest.mark.parametrize("network", ["loha", "lokr"])
def test_loha_and_lokr_render_their_file_and_resume_to_the_same_bytes(folders, tmp_path, network):  # noqa: F811
    """`network=loha|lokr` through `python -m train`: a LyCORIS file from which our engine renders the eval
    grid; resumed from a state in the middle of the epoch (LyCORIS's dropouts on), the same bytes."""
    dropped = (
        "network=locon",
        "eval.enabled=false",
        "training.max_train_epochs=3",
        "training.save_every_n_steps=3",
    )
    overrides = [o for o in resumable(*folders) if o not in dropped]
    overrides += [f"network={network}", "network.conv_dim=2", "training.save_every_n_steps=2"]
    overrides += ["training.max_train_epochs=null", "training.max_train_steps=4"]  # the state at 2: mid-epoch
    overrides += ["network.rank_dropout=0.1", "network.module_dropout=0.1"]
    overrides += ["eval.prompts=[sls toy]", "eval.weights=[0.0,1.0]", "eval.steps=2"]
    whole = run_train(tmp_path / "whole", *overrides)
    assert whole.returncode == 0, whole.stderr[-3000:]
    final = tmp_path / "whole" / f"{NAME}.safetensors"
    families = {type(m).__name__ for m in load_lora_file(final).modules.values()}
    assert families == {"loha": {"LohaModule"}, "lokr": {"LokrModule"}}[network]
    assert header(tmp_path / "whole")["ss_network_module"] == "lycoris.kohya"
    assert json.loads(header(tmp_path / "whole")["ss_network_args"])["algo"] == network
    assert (tmp_path / "whole" / "eval" / "grid.png").is_file()  # rendered from the saved file
    resumed = run_train(
        tmp_path / "resumed", *overrides, f"resume={tmp_path / 'whole' / NAME}-step00000002-state"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "Trained 2 steps" in resumed.stdout
    assert (tmp_path / "resumed" / f"{NAME}.safetensors").read_bytes() == final.read_bytes()


@pytest.mark.slow  # make test-full; the fast suite keeps one run per resume path
def test_an_embedding_resumes_to_the_same_bytes(folders, tmp_path):  # noqa: F811
    """Textual inversion: the vectors and their moments come back, and the template draws replay."""
    overrides = [
        o for o in resumable(*folders) if not o.startswith(("training.max_train_epochs", "network="))
    ]
    overrides += ["training.max_train_epochs=2", "network=embedding", "network.template=object"]
    overrides += [
        "network.init_word=toy",
        "network.num_vectors_per_token=2",
        "optimizer.text_encoder_lr=5e-3",
    ]
    whole = run_train(tmp_path / "whole", *overrides)
    assert whole.returncode == 0, whole.stderr[-3000:]
    states = sorted((tmp_path / "whole").glob(f"{NAME}-step*-state"))
    resumed = run_train(tmp_path / "resumed", *overrides, f"resume={states[len(states) // 2]}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    final = f"{NAME}.safetensors"
    assert (tmp_path / "resumed" / final).read_bytes() == (tmp_path / "whole" / final).read_bytes()
    with safe_open(str(tmp_path / "whole" / final), framework="pt") as file:
        assert list(file.keys()) == ["emb_params"]


def test_dora_trains_renders_and_resumes_to_the_same_bytes(folders, tmp_path):  # noqa: F811
    """network=dora through the users' path: the eval render patches the saved magnitudes in, and they are
    trained tensors of the resume state too, so a resumed run ends on the same bytes."""
    dropped = ("network=locon", "training.max_train_epochs", "training.save_every_n_steps", "eval.enabled")
    overrides = [o for o in resumable(*folders) if not o.startswith(dropped)]
    overrides += ["network=dora", "network.conv_dim=2", "training.save_precision=bf16"]
    overrides += [
        "training.max_train_epochs=null",
        "training.max_train_steps=4",
        "training.save_every_n_steps=2",
    ]
    render = ["eval.prompts=[sls toy]", "eval.weights=[0.0,1.0]", "eval.steps=2", "eval.seeds=[1]"]
    whole = run_train(tmp_path / "whole", *overrides, *render)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert (tmp_path / "whole" / "eval" / "grid.png").is_file()  # rendered with the DoRA file patched in
    with safe_open(str(tmp_path / "whole" / f"{NAME}.safetensors"), framework="pt") as f:
        magnitude = f.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.dora_scale")
        names = {key.split(".")[0] for key in f.keys()}
        assert set(f.keys()) == {
            f"{n}.{p}" for n in names for p in ("lora_down.weight", "lora_up.weight", "alpha", "dora_scale")
        }
    assert magnitude.dtype == torch.bfloat16 and tuple(magnitude.shape) == (1, 32, 1, 1)
    assert header(tmp_path / "whole")["ss_network_module"] == "lycoris.kohya"

    state = tmp_path / "whole" / f"{NAME}-step00000002-state"
    resumed = run_train(tmp_path / "resumed", *overrides, *render, f"resume={state}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    final = f"{NAME}.safetensors"
    assert (tmp_path / "resumed" / final).read_bytes() == (tmp_path / "whole" / final).read_bytes()


@pytest.mark.slow  # make test-full; the fast suite keeps one run per resume path
def test_full_fine_tune_resumes_to_the_same_bytes(folders, tmp_path):  # noqa: F811
    """network=full: a state holds every trained UNet and text-encoder weight; resumed after
    stop_text_encoder_training=4, the text encoder stays frozen from the first batch, as in the whole run."""
    overrides = [
        o for o in resumable(*folders) if not o.startswith(("training.max_train_epochs", "network="))
    ]
    overrides += ["training.max_train_epochs=1", "network=full", "network.stop_text_encoder_training=4"]
    whole = run_train(tmp_path / "whole", *overrides)
    assert whole.returncode == 0, whole.stderr[-3000:]
    states = sorted((tmp_path / "whole").glob(f"{NAME}-step*-state"))
    middle = states[len(states) // 2]
    assert int(middle.name.removeprefix(f"{NAME}-step")[:8]) > 4
    resumed = run_train(tmp_path / "resumed", *overrides, f"resume={middle}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    unet = Path(NAME) / "unet" / "diffusion_pytorch_model.safetensors"  # the diffusers folder's
    for final in (Path(f"{NAME}.safetensors"), unet):
        assert (tmp_path / "resumed" / final).read_bytes() == (tmp_path / "whole" / final).read_bytes()


def _finished_folder(run_dir: Path, final_steps: int, state_step: int) -> Path:
    """A run folder whose final LoRA was trained `final_steps` steps and whose only state is at `state_step`."""
    from safetensors.torch import save_file

    from train.state import STATE_FILE, STATE_FORMAT

    run_dir.mkdir()
    tensors = {"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}
    save_file(tensors, str(run_dir / f"{NAME}.safetensors"), metadata={"ss_steps": str(final_steps)})
    state = run_dir / f"{NAME}-step{state_step:08d}-state"
    state.mkdir()
    progress = {"step": state_step, "epoch": 1, "batch": state_step}
    record = {"format": STATE_FORMAT, "progress": progress, "fits": {}}
    (state / STATE_FILE).write_text(json.dumps(record), encoding="utf-8")
    return state


@pytest.mark.parametrize(("budget", "outcome"), [(30, 200), (100, 200), (200, 200), (300, "refused")])
def test_resume_auto_never_rewinds_a_finished_lora_to_an_older_state(tmp_path, budget, outcome):
    """Ctrl-C at step 25 (a state), resume=auto to the end at 200 without save_state: the folder's newest state
    is older than its LoRA. A later resume=auto must not train from step 25 over the 200-step file."""
    from types import SimpleNamespace

    from train.resume import resume_point, steps_done
    from train.state import ResumeError

    run_dir = tmp_path / "run"
    _finished_folder(run_dir, final_steps=200, state_step=25)
    cfg = SimpleNamespace(resume="auto", name=NAME)
    trainer = SimpleNamespace(cfg=cfg, run_dir=run_dir, plan=SimpleNamespace(max_train_steps=budget))
    start = resume_point(cfg, run_dir)
    assert start is not None and start.name.endswith("00000025-state")
    if outcome == "refused":
        with pytest.raises(ResumeError, match="was trained for 200 steps, but the newest training state"):
            steps_done(trainer, start)
    else:  # reached: "already finished at step 200"
        assert steps_done(trainer, start) == outcome


def test_resume_auto_warns_of_a_fresh_start_only_in_a_folder_without_an_earlier_run(tmp_path, caplog):
    """A finished run that kept no state is "already finished" (steps_done), not "starting from the beginning"."""
    from types import SimpleNamespace

    from train.resume import resume_point

    cfg = SimpleNamespace(resume="auto", name=NAME)
    (tmp_path / "empty").mkdir()
    assert resume_point(cfg, tmp_path / "empty") is None
    assert "holds no training state yet: starting from the beginning" in caplog.text
    caplog.clear()
    (tmp_path / "finished").mkdir()
    (tmp_path / "finished" / f"{NAME}.safetensors").write_bytes(b"")
    assert resume_point(cfg, tmp_path / "finished") is None
    assert "starting from the beginning" not in caplog.text


def test_sigterm_where_work_may_stop_anywhere_raises_with_its_name_and_the_handlers_come_back():
    """The evaluation after training runs inside signals_raise: SIGTERM there is an error line and exit 143,
    not a silent end of the process."""
    from train.signals import Interrupted, signals_raise

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped, signals_raise():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises first
    assert stopped.value.signum == signal.SIGTERM and str(stopped.value) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_before_the_first_step_saves_nothing():
    """Ctrl-C while sample.at_start renders: no untrained step-0 LoRA and state are left to resume from."""
    from train.loop import interrupted
    from train.signals import StopRequest
    from train.state import Progress

    error = interrupted(None, Progress(), StopRequest(signal.SIGINT))
    assert str(error) == "SIGINT: stopped before the first step; nothing was trained or saved"
    assert error.exit_code == 130


def test_a_hand_edited_or_damaged_state_is_one_line(tmp_path):
    from train.state import ResumeError, load_state, read_progress

    state = _finished_folder(tmp_path / "run", final_steps=4, state_step=4)
    record = json.loads((state / "train_state.json").read_text())
    for progress, message in [
        ({"step": "abc"}, "progress.step is 'abc', not a count"),
        ({"step": -1}, "not a"),
    ]:
        (state / "train_state.json").write_text(json.dumps({**record, "progress": progress}))
        with pytest.raises(ResumeError, match=f"is not a complete training state .*{message}"):
            read_progress(state)
    (state / "train_state.json").write_text(json.dumps({**record, "format": 99}))
    with pytest.raises(ResumeError, match="format 99, this program reads format 1"):
        read_progress(state)
    (state / "train_state.json").write_text(json.dumps(record))
    (state / "network.safetensors").write_bytes(os.urandom(256))
    with pytest.raises(ResumeError, match="cannot read the training state in"):
        load_state(state)


def test_a_state_from_before_optimizers_were_recorded_is_checked_by_its_settings():
    """Older states name no optimizer in their fit record: another class is told by its per-group settings
    (SGD's dampening against AdamW's betas), instead of a KeyError at the first step."""
    from train.resume import _load_optimizer_moments
    from train.state import ResumeError

    param = torch.nn.Parameter(torch.ones(3))
    adamw = torch.optim.AdamW([param], lr=1e-3)
    param.grad = torch.ones(3)
    adamw.step()
    saved = adamw.state_dict()
    with pytest.raises(
        ResumeError, match=r"trained with another optimizer \(its settings .*betas.*this run's "
    ):
        _load_optimizer_moments(torch.optim.SGD([param], lr=1e-3), saved, [], fits={})
    again = torch.optim.AdamW([param], lr=5e-4)
    _load_optimizer_moments(again, saved, [], fits={})  # the same class loads, with this run's lr
    assert again.param_groups[0]["lr"] == 5e-4 and again.state[param]["step"] == 1
