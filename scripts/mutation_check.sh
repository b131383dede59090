#!/usr/bin/env bash
# Check that the tests can fail: apply one-line mutations to a temporary copy of the tree,
# run the tests that guard each line, and report which mutations were caught.
#
#   scripts/mutation_check.sh                 # every mutation in scripts/mutations.txt
#   scripts/mutation_check.sh --dry-run       # only check that every mutation still applies
#   scripts/mutation_check.sh --only bias     # the mutations whose line contains "bias"
#   scripts/mutation_check.sh --list my.txt   # another list
#
# Each line of the list is   file ||| original text ||| mutated text ||| pytest arguments
# (blank lines and lines starting with # are skipped). The original text must occur exactly
# once in the file, otherwise the mutation is reported STALE: update the list when the code
# moves. A mutation is CAUGHT when the pytest run fails, SURVIVED when it passes.
# The working tree is never modified: everything happens in a temporary copy, removed on exit.
# Exit status: 0 when every mutation applies and (unless --dry-run) is caught, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIST="$ROOT/scripts/mutations.txt"
DRY_RUN=0
ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --only) ONLY="$2"; shift ;;
        --list) LIST="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "mutation_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python}"; fi
[[ -f "$LIST" ]] || { echo "mutation_check: no mutation list $LIST" >&2; exit 2; }

# A copy of the working tree as it is now (tracked and untracked, not ignored files).
COPY="$(mktemp -d "${TMPDIR:-/tmp}/mutation_check.XXXXXX")"
trap 'rm -rf "$COPY"' EXIT
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    grep -zv '^\.venv$' | xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$COPY"
export PYTHONPATH="$COPY/src:$COPY" WANDB_MODE=disabled WANDB_SILENT=true HYDRA_FULL_ERROR=1
imported="$(cd "$COPY" && "$PY" -c 'import importlib.util as u; print(u.find_spec("rls").origin)')"
[[ "$imported" == "$COPY"/* ]] || { echo "mutation_check: rls imports from $imported" >&2; exit 2; }

# apply FILE ORIGINAL MUTATED [--check]: exact, single-occurrence replacement in the copy.
apply() {
    "$PY" - "$@" <<'EOF'
import sys
path, old, new = sys.argv[1:4]
text = open(path, encoding="utf-8").read()
count = text.count(old)
if count != 1:
    print(f"found {count} times")
    sys.exit(1)
if len(sys.argv) == 4:
    open(path, "w", encoding="utf-8").write(text.replace(old, new))
EOF
}

caught=0 survived=0 stale=0 n=0
while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "${line// }" || "$line" =~ ^[[:space:]]*# ]] && continue
    [[ -n "$ONLY" && "$line" != *"$ONLY"* ]] && continue
    n=$((n + 1))
    file="$(sed -E 's/^[[:space:]]*(.*[^[:space:]])[[:space:]]*$/\1/' <<<"${line%%|||*}")"
    rest="${line#*|||}"; old="${rest%%|||*}"; rest="${rest#*|||}"
    new="${rest%%|||*}"; args="${rest#*|||}"
    old="$(sed -E 's/^ //; s/ $//' <<<"$old")"; new="$(sed -E 's/^ //; s/ $//' <<<"$new")"
    label="$file: '$old' -> '$new'"
    if [[ ! -f "$COPY/$file" ]] || ! why="$(apply "$COPY/$file" "$old" "$new" --check)"; then
        echo "STALE     $label (${why:-no such file})"; stale=$((stale + 1)); continue
    fi
    if [[ $DRY_RUN == 1 ]]; then echo "OK        $label"; continue; fi
    cp "$COPY/$file" "$COPY/$file.orig"
    apply "$COPY/$file" "$old" "$new"
    rc=0
    # shellcheck disable=SC2086  # the pytest arguments are split on purpose
    (cd "$COPY" && timeout 900 "$PY" -m pytest -x -q -p no:cacheprovider $args) >"$COPY/.log" 2>&1 || rc=$?
    case $rc in
        0) echo "SURVIVED  $label   [pytest $args]"; survived=$((survived + 1)) ;;
        1|2|124) # failed, collection error (the mutation broke an import), timed out
            why="$(grep -Em1 '^(FAILED|ERROR) ' "$COPY/.log" | cut -d' ' -f2 || true)"
            [[ $rc == 124 ]] && why="timed out"
            echo "CAUGHT    $label   [$why]"
            caught=$((caught + 1)) ;;
        *) echo "STALE     $label (pytest $args: exit $rc, no tests ran)"; stale=$((stale + 1)) ;;
    esac
    [[ -n "${MUTATION_LOG:-}" ]] && cat "$COPY/.log" >>"$MUTATION_LOG"
    mv "$COPY/$file.orig" "$COPY/$file"
done <"$LIST"

if [[ $DRY_RUN == 1 ]]; then
    echo "mutation_check: $n mutations, $stale stale (dry run: nothing executed)"
else
    echo "mutation_check: $n mutations, $caught caught, $survived survived, $stale stale"
fi
[[ $n -gt 0 && $survived == 0 && $stale == 0 ]]
