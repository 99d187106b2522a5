#!/usr/bin/env bash
# Are pyproject.toml's version ranges true? Install the NEWEST versions they allow (not the lock) into a fresh
# virtual environment and run the whole suite there. Run it before each lock refresh (requirements.in) and record
# the date, the versions it got and the result in benchmarks/README.md ("Newest allowed versions"). Where a new
# release breaks something, fix the code or put an upper bound on that package in pyproject.toml with the reason.
#   bash benchmarks/check_latest.sh [LOG_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PIP_DISABLE_PIP_VERSION_CHECK=1
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
"$venv/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e ".[train,demo,dev]"
"$venv/bin/python" -m pip freeze --exclude-editable > "$out/versions.txt"
echo "versions: $out/versions.txt ($(wc -l < "$out/versions.txt") packages)"
if ! diff <(grep -E '^[A-Za-z0-9_.-]+==' requirements.txt | tr 'A-Z_' 'a-z-' | sort) \
          <(tr 'A-Z_' 'a-z-' < "$out/versions.txt" | sort) > "$out/differences_from_lock.txt"; then
    echo "newer than the lock (< lock, > newest):"; cat "$out/differences_from_lock.txt"
else
    echo "the newest allowed versions are the lock's"
fi
status=0
export PATH="$venv/bin:$PATH"  # the console scripts (afloc-localize, ...) as an activated venv has them
"$venv/bin/python" -m pytest -q -p no:cacheprovider | tee "$out/pytest.txt" | tail -5 || status=$?
echo "pytest exit $status (log: $out/pytest.txt)"
exit "$status"
