#!/bin/sh
# Side-by-side benchmark of specreg and distribution (Debian docker-registry) on loopback.
#
#   bench/run.sh [--quick] [--json FILE] [any other specreg-bench flag, see --help]
#
# Installs docker-registry, wrk, skopeo and curl (the timed blob pulls) when missing
# (apt-get, as root or through sudo), builds the release binaries of specreg and
# specreg-bench, and runs the benchmark. The full run takes a few minutes; --quick (32 MiB
# blob, 2 s of load) well under one.
#
# The `node` phase (in every run; alone: --phases node) is specreg only (issue #5): the
# wall time of `specreg use` / `use --undo` on a fresh --root, and blob (256 MiB, quick 32)
# and manifest pulls through the mirror proxy against the same pulls straight from a TLS
# buildset registry.
#
# The `copy` phase (alone: --phases copy) is specreg against skopeo (issue #7): `specreg
# copy` and `skopeo copy` of the same 10-layer image between two local registries, the
# speedup (target >= 2x), and a re-copy of an image already there (target: 0 blob bytes).
#
# The `promote` phase (alone: --phases promote) times `specreg promote` of a 10 MiB and a
# 1 GiB image (quick: 4 and 64 MiB) on specreg and on distribution: a manifest-only retag,
# so both sizes take the same time within noise (issue #8).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)

missing=""
[ -x /usr/bin/docker-registry ] || missing="$missing docker-registry"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v skopeo >/dev/null 2>&1 || missing="$missing skopeo"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    echo "installing$missing" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi

cd "$root"
cargo build --release --quiet -p specreg -p specreg-bench
target_dir="${CARGO_TARGET_DIR:-$root/target}"
# specreg-bench finds the specreg binary next to itself.
exec "$target_dir/release/specreg-bench" "$@"
