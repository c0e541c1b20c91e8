#!/usr/bin/env bash
# Runs the shardlog Python-client test suite.
#
#   SHARDLOG_BIN=target/debug/shardlog tests/python/run.sh [pytest args...]
#
# Arguments go to pytest; the whole tests/python suite runs unless one of them
# names an existing test path (e.g. tests/python/test_confluent.py::test_x).
# Creates/refreshes a virtualenv at <repo>/.venv-tests whenever
# tests/python/requirements.txt changes, then runs pytest with it and exits
# with pytest's exit code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv-tests"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

req_hash() {
    "$python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$req"
}

make_venv() {
    rm -rf "$venv"
    # `python3 -m venv` needs ensurepip (Debian: the python3-venv package);
    # without it fall back to virtualenv from the user site.
    if "$python" -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    echo "run.sh: 'python3 -m venv' unusable here, falling back to virtualenv" >&2
    rm -rf "$venv"
    if ! "$python" -m virtualenv --version >/dev/null 2>&1; then
        "$python" -m pip install --quiet --user virtualenv ||
            "$python" -m pip install --quiet --user --break-system-packages virtualenv
    fi
    "$python" -m virtualenv --quiet "$venv"
}

want="$(req_hash)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "run.sh: preparing $venv" >&2
    make_venv
    "$venv/bin/python" -m pip install --quiet -r "$req"
    echo "$want" >"$stamp"
fi

cd "$repo"
# Run the whole suite unless a test path (file, dir or node id) was given.
targets=(tests/python)
for arg in "$@"; do
    case "$arg" in
    -*) ;;
    *) if [[ -e "${arg%%::*}" ]]; then targets=(); fi ;;
    esac
done
set +e
"$venv/bin/python" -m pytest -q ${targets[@]+"${targets[@]}"} "$@"
exit $?
