"""The Makefile's install / test / demo rules and tools/ci_detectron2_main.sh's source
argument, as docs/install.md and the README use them (issue 16 items 1-2).

The Makefile runs in a copy of the repository's Makefile with a stand-in bootstrap
(BOOTSTRAP=...) and a stand-in interpreter that logs its arguments: what is tested is
make's rules (the stamp file, which interpreter runs), not the install itself
(tests/tools/test_install.py)."""
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import REPO_ROOT

CI_SCRIPT = os.path.join(REPO_ROOT, "tools", "ci_detectron2_main.sh")
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.fixture
def repo(tmp_path):
    """A folder with the Makefile and the files its install rule depends on, no .venv/."""
    root = tmp_path / "clone"
    (root / "tools").mkdir(parents=True)
    shutil.copy(os.path.join(REPO_ROOT, "Makefile"), root)
    for f in ("setup.py", "tools/bootstrap.sh", "tools/install_detectron2.py"):
        shutil.copy(os.path.join(REPO_ROOT, f), root / f)
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\necho "python $*" >> {tmp_path}/log\n')
    python.chmod(0o755)
    return root, str(python), tmp_path / "log"


def _make(root, *args):
    return subprocess.run(["make", "-s", *args], cwd=root, capture_output=True, text=True, timeout=60)


def test_install_with_python_of_your_own_needs_no_venv(repo):
    root, python, log = repo
    bootstrap = f"BOOTSTRAP=echo bootstrap >> {log}"
    r = _make(root, "install", f"PYTHON={python}", bootstrap)
    assert r.returncode == 0, r.stderr
    assert not (root / ".venv").exists()
    r = _make(root, "test", f"PYTHON={python}", bootstrap)  # installed: not bootstrapped again
    assert r.returncode == 0, r.stderr
    r = _make(root, "demo", f"PYTHON={python}", bootstrap)
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == ["bootstrap", "python -m pytest tests -q", "python tools/run_demo.py"]


def test_default_venv_stamp_lives_in_the_venv(repo):
    root, _, log = repo
    # the stand-in bootstrap creates .venv/bin/python as tools/bootstrap.sh does
    fake_venv = f"mkdir -p .venv/bin && printf '#!/bin/sh\\necho \"venv $$*\" >> {log}\\n' > .venv/bin/python" \
                " && chmod +x .venv/bin/python"
    r = _make(root, "test", f"BOOTSTRAP={fake_venv}")
    assert r.returncode == 0, r.stderr
    assert (root / ".venv" / ".installed").is_file()
    assert log.read_text().splitlines() == ["venv -m pytest tests -q"]


def _ci_resolve(source, cwd):
    env = dict(os.environ, D2MAIN_RESOLVE_ONLY="1", VIT_ADAPTER_CACHE=str(cwd / "cache"))
    env.pop("D2MAIN_SRC", None)
    env.pop("D2MAIN_SNAPSHOT", None)
    return subprocess.run(["bash", CI_SCRIPT, source], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


def _fake_detectron2(root):
    for f in ("setup.py", "detectron2/__init__.py", "tools/lazyconfig_train_net.py"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")


def test_d2main_missing_source_says_how_to_get_one(tmp_path):
    r = _ci_resolve("no_such_detectron2", tmp_path)
    assert r.returncode == 1
    assert "detectron2 main source not found" in r.stderr and f"{tmp_path}/no_such_detectron2" in r.stderr
    assert "git clone https://github.com/facebookresearch/detectron2" in r.stderr


def test_d2main_accepts_a_checkout_or_a_tarball(tmp_path):
    checkout = tmp_path / "detectron2"
    _fake_detectron2(checkout)
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "add", "."], check=True)
    subprocess.run(["git", "-C", str(checkout), "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "x"],
                   check=True)
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    r = _ci_resolve("detectron2", tmp_path)  # relative to the caller's folder
    assert r.returncode == 0, r.stderr
    assert f"detectron2 source: {checkout}, cache key: git-{head}" in r.stdout
    (checkout / "local_change.py").write_text("")
    assert "cache key: none (rebuilt)" in _ci_resolve(str(checkout), tmp_path).stdout

    tarball = tmp_path / "d2.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(checkout, arcname="detectron2-main")
    r = _ci_resolve(str(tarball), tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"(from {tarball})" in r.stdout and os.path.isfile(next(
        os.path.join(d, "tools", "lazyconfig_train_net.py") for d in (tmp_path / "cache" / "d2main-src").iterdir()))

    not_d2 = tmp_path / "other"
    not_d2.mkdir()
    r = _ci_resolve(str(not_d2), tmp_path)
    assert r.returncode == 1 and "is not detectron2's source (no setup.py)" in r.stderr
