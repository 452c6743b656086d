"""The image build's pure parts: the Dockerfile's shape, the input hash that lets images/build.sh
skip a build, the OCI index naming that decides the names containerd imports, the requirement
lists of the dependency layers, and the pause binary."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"images_{name}", REPO / "images" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


imagetool = _load("imagetool")
requirements = _load("requirements")


# ---- the Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name, in file order (dicts keep insertion order)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            parts = rest.split()
            assert len(parts) == 3, f"unnamed stage: FROM {rest}"
            assert parts[1].upper() == "AS", f"unnamed stage: FROM {rest}"
            current = found.setdefault(parts[2], [])
        elif current is not None:
            current.append((word, rest))
    return found


def test_base_image_is_a_build_argument_defaulting_to_the_public_python_image() -> None:
    first = dockerfile_instructions()[0]
    assert first == ("ARG", "BASE=python:3.11-slim-bookworm")
    froms = [rest.split()[0] for word, rest in dockerfile_instructions() if word == "FROM"]
    named = set(stages())
    assert all(image == "${BASE}" or image in named for image in froms), froms


@pytest.mark.parametrize("target", ["operator", "model-server", "mlserver"])
def test_each_final_target_runs_as_a_numeric_non_root_user(target: str) -> None:
    users = [rest for word, rest in stages()[target] if word == "USER"]
    assert users, f"stage {target} sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER {users[-1]}: the kubelet can check runAsNonRoot only for a numeric uid"
    assert int(uid) != 0
    assert gid == "" or gid.isdigit(), users[-1]
    assert gid != "0"


def test_plain_docker_build_gives_the_operator_image() -> None:
    last_stage = list(stages())[-1]
    assert last_stage == "operator"
    entry = [rest for word, rest in stages()["operator"] if word == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["modelfleet"]


def test_model_server_bakes_the_trained_iris_model_and_serves_on_8080() -> None:
    instructions = stages()["model-server"]
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "modelfleet model-server --train /models/iris.joblib" in runs
    assert ("EXPOSE", "8080") in instructions
    assert json.loads([rest for word, rest in instructions if word == "ENTRYPOINT"][-1]) == [
        "modelfleet",
        "model-server",
    ]
    env = " ".join(rest for word, rest in instructions if word == "ENV").split()
    assert "MODELFLEET_MODEL_FILE=/models/iris.joblib" in env
    assert "PORT=8080" in env
    assert not [rest for word, rest in instructions if word == "CMD"], "pod args would replace a CMD"


def test_mlserver_runtime_serves_the_artifact_at_mnt_models_with_the_pinned_extra() -> None:
    instructions = stages()["mlserver"]
    assert json.loads([rest for word, rest in instructions if word == "ENTRYPOINT"][-1]) == [
        "modelfleet",
        "runtime",
        "mlserver",
    ]
    assert ("EXPOSE", "8080") in instructions
    assert "MODELFLEET_MODEL_DIR=/mnt/models" in " ".join(
        rest for word, rest in instructions if word == "ENV"
    )
    assert not [rest for word, rest in instructions if word == "CMD"], "pod args would replace a CMD"
    # its venv holds the `mlserver` extra, and none of the operator's own dependencies
    copies = [rest for word, rest in instructions if word == "COPY"]
    assert "--from=deps-mlserver /opt/modelfleet /opt/modelfleet" in copies
    runs = " ".join(rest for word, rest in stages()["mlserver-requirements"] if word == "RUN")
    assert "requirements.py pyproject.toml mlserver" in runs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = requirements.requirements(pyproject, ["mlserver"])
    names = {re.split("[=<>]", req)[0] for req in pinned}
    assert {
        "mlserver",
        "mlserver-sklearn",
        "mlserver-xgboost",
        "mlserver-lightgbm",
        "mlserver-mlflow",
    } <= names
    assert all("==" in req for req in pinned), f"the runtime image's requirements are pinned: {pinned}"


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    deps = stages()["deps"]
    copies = [rest for word, rest in deps if word == "COPY"]
    assert copies
    assert all("operator" not in c for c in copies), "the deps stage must not see the source"
    assert any("requirements.txt" in rest for word, rest in deps if word == "RUN")


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**/` any folders, `*` and `?` within one name."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` out: a pattern matches the path or a folder above it,
    and the last matching pattern wins (`!` lets a path back in)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        regex = _pattern(pattern.removeprefix("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            result = not pattern.startswith("!")
    return result


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    copied = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            copied += rest.split()[:-1]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        inside = source + "modelfleet/cli.py" if source.endswith("/") else source
        assert not _ignored(inside, patterns), (
            f"COPY {source}, but .dockerignore leaves it out of the context"
        )
    assert _ignored("operator/modelfleet/__pycache__/cli.cpython-311.pyc", patterns)
    assert _ignored(".venv/bin/python", patterns)


# ---- the input hash ----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "operator" / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "operator" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "operator" / "pkg" / "core.py").write_text("x = 1\n")
    (tmp_path / "operator" / "pkg" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "operator" / "pkg.egg-info").mkdir()
    (tmp_path / "operator" / "pkg.egg-info" / "PKG-INFO").write_text("Name: pkg\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


def _hash(root: Path, *extra: str) -> str:
    files = imagetool.input_files(root, ["Dockerfile", "operator", "README.md"])
    digest: str = imagetool.input_hash(root, files, extra)
    return digest


def test_input_files_leave_out_caches_and_build_leftovers(tree: Path) -> None:
    files = imagetool.input_files(tree, ["Dockerfile", "operator", "missing.txt"])
    assert files == ["Dockerfile", "operator/pkg/__init__.py", "operator/pkg/core.py"]


def test_hash_is_stable_across_timestamps_and_caches(tree: Path) -> None:
    before = _hash(tree)
    os.utime(tree / "operator" / "pkg" / "core.py", (1, 1))
    (tree / "operator" / "pkg" / "__pycache__" / "other.pyc").write_bytes(b"\1")
    assert _hash(tree) == before
    assert imagetool.input_hash(tree, ["operator/pkg/core.py", "Dockerfile"]) == imagetool.input_hash(
        tree, ["Dockerfile", "operator/pkg/core.py"]
    )


@pytest.mark.parametrize(
    "change",
    ["edit", "new file", "rename", "executable bit", "optional file appears", "base image"],
)
def test_hash_changes_with_every_input(tree: Path, change: str) -> None:
    before = _hash(tree)
    core = tree / "operator" / "pkg" / "core.py"
    extra: tuple[str, ...] = ()
    if change == "edit":
        core.write_text("x = 2\n")
    elif change == "new file":
        (tree / "operator" / "pkg" / "extra.py").write_text("")
    elif change == "rename":
        core.rename(core.with_name("core2.py"))
    elif change == "executable bit":
        core.chmod(0o755)
    elif change == "optional file appears":
        (tree / "README.md").write_text("# pkg\n")
    else:
        extra = ("base=sha256:other",)
    assert _hash(tree, *extra) != before


def test_hash_cli_rejects_a_tree_with_no_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert imagetool.main(["hash", str(tmp_path), "operator"]) == 1
    assert "no input files" in capsys.readouterr().err


# ---- naming the images in an OCI archive -------------------------------------------------------

MANIFEST = {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + "a" * 64,
    "size": 1234,
    "annotations": {"org.opencontainers.image.ref.name": "localhost/modelfleet-model-server:dev"},
}
INDEX = {"schemaVersion": 2, "manifests": [MANIFEST]}


def test_named_index_gives_the_one_image_every_name_for_containerd() -> None:
    names = ["localhost/modelfleet-model-server:dev", "localhost/iris-server:1", "localhost/iris-server:2"]
    index = imagetool.named_index(INDEX, [*names, "localhost/iris-server:1"])
    assert [m["annotations"][imagetool.CONTAINERD_NAME] for m in index["manifests"]] == names
    assert [m["annotations"][imagetool.REF_NAME] for m in index["manifests"]] == names
    assert {m["digest"] for m in index["manifests"]} == {MANIFEST["digest"]}
    assert imagetool.index_refs(index) == [(name, MANIFEST["digest"]) for name in names]
    assert INDEX["manifests"] == [MANIFEST], "the input index must not be modified"


def test_named_index_takes_the_image_just_pushed_over_older_ones() -> None:
    """A push into a kept layout replaces the entry of the first name only; the others still
    point at the previous image until they are renamed."""
    old = {
        **MANIFEST,
        "digest": "sha256:" + "0" * 64,
        "annotations": {imagetool.REF_NAME: "localhost/iris-server:1"},
    }
    pushed = {**MANIFEST, "annotations": {imagetool.REF_NAME: "localhost/modelfleet-model-server:dev"}}
    index = imagetool.named_index(
        {"schemaVersion": 2, "manifests": [old, pushed]},
        ["localhost/modelfleet-model-server:dev", "localhost/iris-server:1"],
    )
    assert {m["digest"] for m in index["manifests"]} == {MANIFEST["digest"]}
    assert len(index["manifests"]) == 2


@pytest.mark.parametrize(
    ("index", "names", "message"),
    [
        (INDEX, [], "at least one image name"),
        ({"schemaVersion": 2, "manifests": []}, ["a:1"], "no manifests"),
        (
            {"manifests": [MANIFEST, {**MANIFEST, "digest": "sha256:" + "b" * 64}]},
            ["a:1"],
            "several images and none is named a:1",
        ),
    ],
)
def test_named_index_rejects_what_it_cannot_name(
    index: dict[str, object], names: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        imagetool.named_index(index, names)


@pytest.mark.parametrize("member", ["index.json", "./index.json"])
def test_refs_are_read_from_an_oci_archive(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "image.tar"
    data = json.dumps(imagetool.named_index(INDEX, ["localhost/iris-server:3"])).encode()
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert imagetool.index_refs(imagetool.read_index(archive)) == [
        ("localhost/iris-server:3", MANIFEST["digest"])
    ]


def _blob(layout: Path, content: bytes) -> dict[str, object]:
    digest = hashlib.sha256(content).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(content)
    return {"mediaType": "application/octet-stream", "digest": f"sha256:{digest}", "size": len(content)}


def _image(layout: Path, layer: bytes) -> dict[str, object]:
    """Writes a config, a layer and a manifest; returns the manifest's descriptor."""
    manifest = {"schemaVersion": 2, "config": _blob(layout, b"{}" + layer), "layers": [_blob(layout, layer)]}
    return _blob(layout, json.dumps(manifest).encode())


def test_name_layout_names_the_new_image_and_drops_the_blobs_of_the_old(tmp_path: Path) -> None:
    old = _image(tmp_path, b"old layer")
    shared = _image(tmp_path, b"same layer")
    new = {**shared, "annotations": {imagetool.REF_NAME: "localhost/a:1"}}
    old_named = {**old, "annotations": {imagetool.REF_NAME: "localhost/b:2"}}
    (tmp_path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [old_named, new]}))

    assert imagetool.main(["name-layout", str(tmp_path), "localhost/a:1", "localhost/b:2"]) == 0

    refs = imagetool.index_refs(json.loads((tmp_path / "index.json").read_text()))
    assert refs == [("localhost/a:1", shared["digest"]), ("localhost/b:2", shared["digest"])]
    left = {f"sha256:{path.name}" for path in (tmp_path / "blobs" / "sha256").iterdir()}
    assert len(left) == 3
    assert shared["digest"] in left
    assert old["digest"] not in left


def test_referenced_blobs_follow_nested_indexes() -> None:
    blobs = {
        "sha256:i": {"manifests": [{"digest": "sha256:m"}]},
        "sha256:m": {
            "config": {"digest": "sha256:c"},
            "layers": [{"digest": "sha256:l1"}, {"digest": "sha256:l2"}],
        },
    }
    found = imagetool.referenced_blobs({"manifests": [{"digest": "sha256:i"}]}, blobs.__getitem__)
    assert found == {"sha256:i", "sha256:m", "sha256:c", "sha256:l1", "sha256:l2"}


# ---- requirement lists for the dependency layers -----------------------------------------------

PYPROJECT = {
    "project": {
        "dependencies": ["kopf>=1.44", "pydantic>=2.6,<3"],
        "optional-dependencies": {
            "modelserver": ["scikit-learn>=1.3", "numpy>=1.26"],
            "dev": ["numpy>=1.26"],
        },
    }
}


def test_requirements_of_the_project_and_of_extras() -> None:
    assert requirements.requirements(PYPROJECT) == ["kopf>=1.44", "pydantic>=2.6,<3"]
    assert requirements.requirements(PYPROJECT, ["modelserver", "dev"]) == [
        "scikit-learn>=1.3",
        "numpy>=1.26",
    ]


def test_requirements_name_the_known_extras_when_one_is_unknown() -> None:
    with pytest.raises(ValueError, match=r"unknown extra gpu \(pyproject.toml defines: dev, modelserver\)"):
        requirements.requirements(PYPROJECT, ["gpu"])
    with pytest.raises(ValueError, match=r"no \[project\] table"):
        requirements.requirements({}, [])


def test_requirements_of_this_repository_include_the_model_server_extra() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "images" / "requirements.py"),
            str(REPO / "pyproject.toml"),
            "modelserver",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert any(line.startswith("scikit-learn") for line in out)


# ---- the build script and the pause binary -----------------------------------------------------


def test_build_script_parses_and_rejects_unknown_arguments() -> None:
    script = REPO / "images" / "build.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    result = subprocess.run([str(script), "--no-such-flag"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "unknown argument '--no-such-flag'" in result.stderr
    # A wrong loader is caught before anything is built, not after a long build.
    env = {**os.environ, "IMAGE_LOADER": "docker"}
    result = subprocess.run([str(script), "pause"], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "IMAGE_LOADER=docker: expected containerd, kind or none" in result.stderr
    assert "pause:" not in result.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_pause_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    binary, source = tmp_path / "pause", REPO / "images" / "pause" / "pause.c"
    subprocess.run(
        ["gcc", "-Os", "-Wall", "-Wextra", "-Werror", '-DVERSION="3.10"', "-o", str(binary), str(source)],
        check=True,
    )
    assert subprocess.run([str(binary), "-v"], capture_output=True, text=True).stdout == "pause 3.10\n"
    proc = subprocess.Popen([str(binary)], stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)  # it keeps running until told to stop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
    assert proc.stderr is not None
    assert "not running as PID 1" in proc.stderr.read()
