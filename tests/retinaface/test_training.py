"""Training: schedule, sampling, presets, exact resume (also after SIGKILL, and of torchrun on 2 CPU processes), SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retinaface.cli.train import main as train_main
from retinaface.errors import ConfigError
from retinaface.training.loop import EpochSampler, lr_factor, train, train_config
from retinaface.model.weights import read_safetensors

from ..cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "scripts" / "train.py"


def test_schedule_warms_up_then_decays():
    kw = dict(steps_per_epoch=10, warmup_epochs=2, decay_epochs=(5, 8), gamma=0.1)
    assert lr_factor(0, **kw) == pytest.approx(1 / 20)
    assert lr_factor(9, **kw) == pytest.approx(10 / 20)
    assert lr_factor(19, **kw) == 1.0 and lr_factor(49, **kw) == 1.0
    assert lr_factor(50, **kw) == pytest.approx(0.1) and lr_factor(80, **kw) == pytest.approx(0.01)


def test_sampler_is_deterministic_sharded_and_skippable():
    a = EpochSampler(10, seed=3)
    assert a.indices() == EpochSampler(10, seed=3).indices() and sorted(a.indices()) == list(range(10))
    a.epoch = 1
    assert a.indices() != EpochSampler(10, seed=3).indices()
    ranks = [EpochSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    shares = [r.indices() for r in ranks]
    assert all(len(s) == 4 for s in shares) and set(sum(shares, [])) == set(range(10))
    ranks[0].skip = 2
    assert list(ranks[0]) == shares[0][2:]


def test_presets_and_overrides():
    cfg = train_config("mobilenet0.25-synthetic", ["--lr=0.05", "--decay_epochs=[3, 4]"])
    assert cfg.lr == 0.05 and cfg.decay_epochs == (3, 4) and cfg.image_size == 320
    assert train_config("resnet50-wider", []).model == "resnet50"
    with pytest.raises(ConfigError, match="unknown config key"):
        train_config("mobilenet0.25-wider", ["--learning_rate=1"])
    with pytest.raises(ConfigError, match="unknown training preset"):
        train_config("vgg-wider", [])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from retinaface.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, num_train=6, num_val=2, seed=1, height=120, width=160, progress=False)
    return root


def _config(tiny_data, output, **extra):
    overrides = [
        f"--train_labels={tiny_data / 'train' / 'label.txt'}", f"--output={output}", "--image_size=96", "--batch_size=2",
        "--workers=0", "--epochs=3", "--checkpoint_every=2", "--log_every=1", "--loss.max_mesh_faces=2",
    ] + [f"--{k}={v}" for k, v in extra.items()]
    return train_config("mobilenet0.25-synthetic", overrides)


def _weights(path):
    return read_safetensors(path)[0]


@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons run single-threaded: with several threads, CPU kernels are not
    bit-reproducible when the machine is busy (measured: two uninterrupted 2-thread runs differed under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resume_continues_exactly(tiny_data, tmp_path, one_thread):
    full = train(_config(tiny_data, tmp_path / "full", max_steps=5), progress=False)
    assert full.global_step == 5 and full.history[-1]["loss"] > 0
    assert {"loss_cls", "loss_box", "loss_landmarks", "loss_pixel"} <= set(full.history[-1])
    train(_config(tiny_data, tmp_path / "part", max_steps=2), progress=False)  # stops mid-epoch 1 (3 steps/epoch)
    resumed_config = train_config("", ["--max_steps=5"], resume=str(tmp_path / "part" / "last.pt"))
    resumed = train(resumed_config, resume=str(tmp_path / "part" / "last.pt"), progress=False)
    assert resumed.global_step == 5
    a, b = _weights(tmp_path / "full" / "final.safetensors"), _weights(tmp_path / "part" / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_synthetic_sets_teach_the_mesh_head_their_rendered_truth(tiny_data, tmp_path):
    """From render_params.json through the augmentation to the loss: the mesh preset's truth term is in
    every logged step and moves the RoI head; the plain preset has no such term."""
    overrides = [f"--train_labels={tiny_data / 'train' / 'label.txt'}", "--image_size=96", "--batch_size=2", "--workers=0",
                 "--max_steps=3", "--log_every=1", "--loss.pixel_weight=0"]
    mesh = train(train_config("mobilenet0.25-synthetic-mesh", overrides + [f"--output={tmp_path / 'mesh'}"]), progress=False)
    assert all(record["loss_mesh_truth"] > 0 for record in mesh.history)
    plain = train(train_config("mobilenet0.25-synthetic", overrides + [f"--output={tmp_path / 'plain'}"]), progress=False)
    assert all("loss_mesh_truth" not in record for record in plain.history)
    # the head's output layer starts at zero; with no pixel term only the truth moves it
    output = lambda run: _weights(tmp_path / run / "final.safetensors")["heads.mesh.output.weight"]  # noqa: E731
    assert output("mesh").abs().sum() > 0 and output("plain").abs().sum() == 0
    # the mesh preset's model reads 64 pixel maps (two stride-2 convs, 3 -> 32 -> 64), the plain one 32
    pixels = lambda run: _weights(tmp_path / run / "final.safetensors")["heads.mesh.pixels.1.0.weight"].shape  # noqa: E731
    assert pixels("mesh") == (64, 32, 3, 3) and pixels("plain") == (32, 16, 3, 3)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_data, tmp_path, one_thread):
    args = lambda out, steps: [  # noqa: E731
        sys.executable, str(TRAIN), "--preset", "mobilenet0.25-synthetic", "--no-progress",
        *[f"--{k}" if v is None else f"--{k}={v}" for k, v in dict(
            train_labels=tiny_data / "train" / "label.txt", output=out, image_size=96, batch_size=2, workers=0,
            epochs=4, checkpoint_every=1, max_steps=steps).items()], "--loss.max_mesh_faces=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_thread
    # the uninterrupted reference: the same command in this process (one_thread: the processes' one thread)
    # ten steps, killed after the fourth: a window wide enough that a loaded machine does not let it finish first
    reference = run_cli(train_main, *args(tmp_path / "ref", 10)[2:])
    assert reference.returncode == 0, reference.stderr[-2000:]
    process = subprocess.Popen(args(tmp_path / "killed", 10), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    checkpoint = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not (checkpoint.exists() and torch.load(checkpoint, weights_only=True)["global_step"] >= 4):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 4 <= stopped_at < 10 and not (tmp_path / "killed" / "final.safetensors").exists()
    resumed = subprocess.run(
        [sys.executable, str(TRAIN), "--resume", str(checkpoint), "--no-progress"], capture_output=True, text=True, timeout=600, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "ref" / "final.safetensors"), _weights(tmp_path / "killed" / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(tiny_data, output, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", str(TRAIN), "--preset", "mobilenet0.25-synthetic", "--no-progress",
         f"--train_labels={tiny_data / 'train' / 'label.txt'}", f"--output={output}", "--image_size=96", "--batch_size=2",
         "--workers=0", "--epochs=2", "--checkpoint_every=1", "--loss.max_mesh_faces=2", *extra],
        capture_output=True, text=True, timeout=600, env=env,
    )


def test_torchrun_two_cpu_processes_resume_exactly_after_an_interruption(tiny_data, tmp_path):
    """Two processes stopped after their first step and resumed (again two processes) end with the weights
    of an uninterrupted two-process run, bit for bit: the sampler's shards, the optimiser and the gradient
    all-reduce carry over."""
    reference = _torchrun(tiny_data, tmp_path / "ddp")
    assert reference.returncode == 0, reference.stderr[-3000:]
    # 6 images over 2 ranks with batch 2: 2 steps per epoch, each seeing 4 images
    assert "trained 4 steps (2 epochs)" in reference.stdout
    stopped = _torchrun(tiny_data, tmp_path / "part", "--max_steps=1")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    checkpoint = tmp_path / "part" / "last.pt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", str(TRAIN), "--resume", str(checkpoint), "--no-progress", "--max_steps=0"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trained 4 steps (2 epochs)" in resumed.stdout
    a, b = _weights(tmp_path / "ddp" / "final.safetensors"), _weights(tmp_path / "part" / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_keeps_the_last_checkpoint_and_says_how_to_resume(tiny_data, tmp_path):
    output = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), "--preset", "mobilenet0.25-synthetic", "--no-progress",
         f"--train_labels={tiny_data / 'train' / 'label.txt'}", f"--output={output}", "--image_size=96", "--batch_size=2",
         "--workers=0", "--epochs=50", "--checkpoint_every=1", "--loss.max_mesh_faces=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    checkpoint = output / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert f"resume with --resume {checkpoint}" in stderr and "Traceback" not in stderr
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] >= 1 and not (output / "final.safetensors").exists()


def test_bad_training_input_is_one_line(tmp_path):
    (tmp_path / "label.txt").write_text("# a.jpg\n1 2 3\n")
    result = run_cli(train_main, f"--train_labels={tmp_path / 'label.txt'}", "--no-progress")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "label.txt:2" in result.stderr
    result = run_cli(train_main, "--train_labels=x", "--bogus=1")
    assert result.returncode == 2 and "unknown config key 'bogus'" in result.stderr


def _niceness_after_worker_init(queue) -> None:
    import os

    from retinaface.training.loop import _background_worker

    _background_worker(0)
    queue.put(os.nice(0))


def test_cpu_data_workers_run_at_a_lower_priority_than_the_training_step():
    """On the CPU the loader's workers yield to the step's OpenMP threads (docs/training.md: 3-12 % less
    wall time per step on 2 cores)."""
    import multiprocessing
    import os

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_niceness_after_worker_init, args=(queue,))
    worker.start()
    niceness = queue.get(timeout=60)
    worker.join(timeout=60)
    assert niceness == min(os.nice(0) + 10, 19)
