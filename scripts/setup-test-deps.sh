#!/usr/bin/env bash
# Install the Debian 12 packages that the end-to-end tests (tests/e2e_*.rs) need.
# Idempotent: does nothing when everything is installed. Must run as root.
# Only apt is used; nothing else is downloaded.
set -euo pipefail

PACKAGES=(
  docker.io        # dockerd + docker CLI (20.10); the tests start a private dockerd
  containerd       # private containerd for dockerd and the ctr tests
  runc
  podman
  skopeo
  buildah
  docker-registry  # distribution 2.8, the reference registry for interop tests
  golang-github-containers-common
  uidmap
  iptables
  fuse-overlayfs
  util-linux       # unshare (private mount namespaces)
  tar
  curl
  ca-certificates
  openssl          # e2e_tls_auth: given certificates, fingerprints, SANs
  apache2-utils    # htpasswd: distribution with bcrypt htpasswd auth (e2e_publish)
  wrk              # load tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != "installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup-test-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-test-deps: missing packages: ${missing[*]}; run this script as root" >&2
  exit 1
fi

echo "setup-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Don't let package scripts start system daemons (dockerd, containerd): the
# tests start private ones and a system dockerd would add bridges/iptables rules.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -q
apt-get install -y -q "${missing[@]}" </dev/null
echo "setup-test-deps: done"
