#!/usr/bin/env bash
# Tools for validating deploy/ offline (tests/it/deploy.rs): a Python venv with
# kubernetes-validate (bundles the Kubernetes JSON schemas, so no cluster and no schema
# download) and the Compose specification's JSON schema, which PyPI ships inside
# docker-compose 1.29.2 (compose/config/compose_spec.json; installed with --no-deps: only
# that file is read, the package is never imported). Idempotent: a venv that already has
# both is left as it is. Registries only (PyPI, Debian).
set -euo pipefail
venv="${HOOKGATE_DEPLOY_VENV:-$HOME/.cache/hookgate-ci/venv}"
# Pinned: a new kubernetes-validate may drop old schema versions or change its API.
kv="kubernetes-validate==1.37.0"
dc="docker-compose==1.29.2"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY' 2>/dev/null; then
import importlib.util, pathlib, kubernetes_validate, yaml, jsonschema
spec = importlib.util.find_spec("compose")
assert spec and (pathlib.Path(spec.submodule_search_locations[0]) / "config/compose_spec.json").is_file()
PY
  echo "deploy tools: $venv is ready"
  exit 0
fi

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "installing Debian package python3-venv"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
echo "deploy tools: creating $venv"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
# /usr/bin/python3: the system interpreter, so a pyenv shim or a user's shell setup does not
# decide which Python the venv is built on.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$kv" pyyaml
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$dc"
echo "deploy tools: $venv is ready"
