"""The offline gate of deploy/k8s (`make k8s-validate`, part of `make lint`): no cluster and no network needed.

For every overlay in deploy/k8s/overlays:
1. `kubectl kustomize` renders it (KUBECONFIG an empty file: kubectl never talks to a server);
2. `kubernetes-validate --strict` checks the built-in kinds against the Kubernetes schemas it bundles, for the
   oldest and the newest version we support; a kind it has no schema for is a failure, not a warning;
3. `jsonschema` checks the custom resources against the operators' own CRD schemas (../shared/k8s-crds beside
   the repository, or K8S_CRD_DIR), with unknown fields rejected as `kubectl apply` (strict field validation) does;
4. the structural checks of deploy/k8s/checks.py.
Then checkov scans every rendered overlay (`--checkov PATH`; skips, each with its reason, in
deploy/k8s/checkov.yaml). Exit status 1 on any problem; 2 when a tool or the CRD folder is missing.

    python -m deploy.k8s.validate [--out DIR] [--checkov .venv-checkov/bin/checkov] [OVERLAY ...]
"""

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from deploy.k8s import checks

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = K8S / "overlays"
CHECKOV_CONFIG = K8S / "checkov.yaml"
# The oldest Kubernetes these manifests need (the preStop `sleep` action is on by default from 1.30) and the
# newest whose schemas kubernetes-validate bundles (an API removed since would show there).
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Secrets the manifests reference that nobody generates: you create them (docs/kubernetes.md, "Secrets").
EXTERNAL_SECRETS = frozenset({"items-app", "items-db-backup-s3"})

Doc = dict[str, Any]
CrdKey = tuple[str, str, str]  # (group, version, kind)


class GateError(Exception):
    """A tool or an input of the gate is missing: nothing could be validated."""


def crd_dir() -> Path:
    """`<repo>/../shared/k8s-crds`, where CI lays shared/ beside the clone; K8S_CRD_DIR overrides it."""
    return Path(os.environ.get("K8S_CRD_DIR") or REPO.parent / "shared" / "k8s-crds")


def overlay_dirs() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())


def render(overlay: Path) -> str:
    """`kubectl kustomize OVERLAY`, offline: KUBECONFIG is an empty file (without one kubectl would look for a
    server on localhost:8080, where the native stack's Nginx listens)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise GateError("kubectl is not installed: it renders the overlays (`kubectl kustomize`), install it first")
    with tempfile.NamedTemporaryFile(prefix="kubeconfig-", suffix=".yaml") as kubeconfig:
        env = {**os.environ, "KUBECONFIG": kubeconfig.name}
        result = subprocess.run(
            [kubectl, "kustomize", str(overlay)], env=env, capture_output=True, text=True, check=False, timeout=60
        )
    if result.returncode != 0:
        raise GateError(f"kubectl kustomize {overlay} failed:\n{result.stderr.strip()}")
    return result.stdout


# libyaml's loader where PyYAML has it: the CRDs are 1.5 MB of YAML, seconds for the pure-Python one.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def documents(text: str) -> list[Doc]:
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


def load_crd_schemas(directory: Path) -> dict[CrdKey, Doc]:
    if not directory.is_dir():
        raise GateError(
            f"the operators' CRD schemas are not at {directory}: the gate validates the custom resources against "
            "them and cannot skip that. They are shared/k8s-crds beside the repository (CI lays shared/ next to "
            "the clone); set K8S_CRD_DIR to use another copy."
        )
    schemas: dict[CrdKey, Doc] = {}
    for path in sorted(directory.glob("*.yaml")):
        for crd in documents(path.read_text()):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                schemas[(spec["group"], version["name"], spec["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    if not schemas:
        raise GateError(f"no CustomResourceDefinition in {directory}")
    return schemas


def strict_schema(schema: Doc) -> Doc:
    """The schema with unknown fields rejected: the API server prunes (or, with `kubectl apply`'s strict field
    validation, refuses) fields a structural schema does not declare, so a misspelt field must fail here."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def split_custom(docs: list[Doc], schemas: dict[CrdKey, Doc]) -> tuple[list[Doc], list[Doc]]:
    """(built-in, custom): custom are the documents of a group some CRD defines."""
    groups = {group for group, _, _ in schemas}
    custom = [d for d in docs if checks.group_of(d) in groups]
    return [d for d in docs if checks.group_of(d) not in groups], custom


def custom_resource_problems(docs: list[Doc], schemas: dict[CrdKey, Doc]) -> list[str]:
    problems = []
    validators: dict[CrdKey, jsonschema.Draft7Validator] = {}
    for doc in docs:
        group, _, version = str(doc.get("apiVersion", "")).partition("/")
        key = (group, version, str(doc.get("kind")))
        if key not in schemas:
            problems.append(f"{checks.ident(doc)}: no CRD schema for {doc.get('apiVersion')} {doc.get('kind')}")
            continue
        if key not in validators:
            validators[key] = jsonschema.Draft7Validator(strict_schema(schemas[key]))
        for error in sorted(validators[key].iter_errors(doc), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(top)"
            problems.append(f"{checks.ident(doc)}: {path}: {error.message}")
    return problems


def builtin_problems(docs: list[Doc], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """`kubernetes-validate --strict` on the built-in kinds, for each version. Its warning that it has no schema
    for a kind (a misspelt kind or apiVersion, or an API removed) counts as a problem."""
    if not docs:
        return []
    with tempfile.TemporaryDirectory(prefix="k8s-builtin-") as tmp:
        path = Path(tmp) / "builtin.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        command = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
        for version in versions:
            command += ["-k", version]
        result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False, timeout=120)
    lines = [line.replace(str(path), "").strip() for line in (result.stdout + result.stderr).splitlines()]
    problems = [line for line in lines if line.split(" ", 1)[0] in ("ERROR", "WARN", "FATAL")]
    if result.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {result.returncode}: {' '.join(lines)[:500]}")
    return problems


def overlay_problems(text: str, schemas: dict[CrdKey, Doc]) -> tuple[int, int, list[str]]:
    """(built-in count, custom count, problems) of one rendered overlay."""
    docs = documents(text)
    builtin, custom = split_custom(docs, schemas)
    problems = [
        *builtin_problems(builtin),
        *custom_resource_problems(custom, schemas),
        *checks.structural_problems(docs, EXTERNAL_SECRETS),
    ]
    return len(builtin), len(custom), problems


def run_checkov(checkov: Path, rendered: list[Path]) -> int:
    """checkov on the rendered manifests, offline (`--skip-download`), skips from CHECKOV_CONFIG."""
    if not checkov.exists():
        raise GateError(f"checkov is not installed at {checkov} (`make k8s-validate` installs it)")
    command = [str(checkov), "--config-file", str(CHECKOV_CONFIG), "--framework", "kubernetes"]
    command += ["--skip-download", "--quiet", "--compact"]
    for path in rendered:
        command += ["-f", str(path)]
    # No telemetry, no calls home: this runs with no network.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    return subprocess.run(command, env=env, check=False, timeout=300).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overlays", nargs="*", type=Path, help="overlay directories (default: every overlay)")
    parser.add_argument("--out", type=Path, help="keep the rendered manifests here (OVERLAY.yaml each)")
    parser.add_argument("--checkov", type=Path, help="checkov executable; without it checkov is not run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    failed = False
    try:
        schemas = load_crd_schemas(crd_dir())
        with tempfile.TemporaryDirectory(prefix="k8s-rendered-") as tmp:
            out = args.out or Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            rendered = []
            for overlay in args.overlays or overlay_dirs():
                text = render(overlay)
                path = out / f"{overlay.name}.yaml"
                path.write_text(text)
                rendered.append(path)
                builtin, custom, problems = overlay_problems(text, schemas)
                verdict = "ok" if not problems else f"{len(problems)} problem(s)"
                print(
                    f"k8s-validate {overlay.name}: {builtin} built-in objects (kubernetes-validate --strict, "
                    f"{', '.join(KUBERNETES_VERSIONS)}), {custom} custom resources (CRD schemas), structure: {verdict}"
                )
                for problem in problems:
                    print(f"  {problem}")
                failed |= bool(problems)
            if args.checkov:
                print(f"k8s-validate checkov: {', '.join(p.name for p in rendered)}")
                failed |= run_checkov(args.checkov, rendered) != 0
            else:
                print("k8s-validate checkov: not run (no --checkov)")
    except GateError as exc:
        print(f"k8s-validate: {exc}", file=sys.stderr)
        return 2
    print(f"k8s-validate: {'FAILED' if failed else 'passed'} in {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
