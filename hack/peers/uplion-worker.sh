#!/usr/bin/env bash
# `make peers`: uplion's Python worker (WorkerNodePython in uplion/WorkerNode), built from its public
# source into .peers/uplion-worker/ for `make bench-worker` to run side by side with ours:
#   .peers/uplion-worker/venv/            its requirements (requirement.txt)
#   .peers/uplion-worker/tiktoken-cache/  cl100k_base, the encoding it counts tokens with (it asks
#                                         tiktoken for gpt-3.5-turbo's), rebuilt from the ranks the
#                                         js-tiktoken npm package ships, checked by tiktoken's own hash
# The source is not fetched here: clone it into .peers/src/WorkerNode first (see below).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=.peers/src/WorkerNode
APP=$SRC/WorkerNodePython/WorkerNode
DEST=.peers/uplion-worker
JS_TIKTOKEN=js-tiktoken@1.0.21

if [ ! -f "$APP/WorkerNode.py" ]; then
    echo "uplion's worker: no source in $SRC, skipped. To build it:"
    echo "  git clone https://github.com/uplion/WorkerNode $SRC && bash hack/peers/uplion-worker.sh"
    exit 0
fi
echo "uplion's worker: $APP at $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?')"

PY=${PYTHON:-python3}
if [ ! -x "$DEST/venv/bin/python" ]; then
    "$PY" -m venv "$DEST/venv.tmp"
    "$DEST/venv.tmp/bin/pip" install -q --disable-pip-version-check -r "$APP/requirement.txt"
    mv "$DEST/venv.tmp" "$DEST/venv"
fi

CACHE=$DEST/tiktoken-cache
if ! TIKTOKEN_CACHE_DIR=$CACHE "$DEST/venv/bin/python" -c '
import tiktoken.load as load
load.read_file = lambda path: (_ for _ in ()).throw(OSError("not cached: " + path))
import tiktoken; tiktoken.get_encoding("cl100k_base")' 2>/dev/null; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$JS_TIKTOKEN" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$CACHE"
    # tiktoken checks the file's sha256 against the one it expects, then caches it under its own name.
    TIKTOKEN_CACHE_DIR=$CACHE "$DEST/venv/bin/python" - "$work/package/dist/ranks/cl100k_base.js" "$CACHE" <<'PY'
import json
import sys

text = open(sys.argv[1], encoding="utf-8").read()
doc = json.loads(text[text.index("{") : text.rindex("}") + 1])
ranks = {}
for line in doc["bpe_ranks"].split("\n"):
    if line:
        _, offset, *tokens = line.split(" ")
        for i, token in enumerate(tokens):
            ranks[int(offset) + i] = token
data = "".join(f"{ranks[r]} {r}\n" for r in sorted(ranks)).encode()

import tiktoken.load as load

load.read_file = lambda path: data
import tiktoken

enc = tiktoken.get_encoding("cl100k_base")
assert enc.encode("hello world") == [15339, 1917], enc.encode("hello world")
print(f"uplion's worker: cl100k_base ({len(ranks)} ranks) cached in {sys.argv[2]}")
PY
fi
echo "uplion's worker: ready in $DEST (make bench-worker runs it side by side)"
