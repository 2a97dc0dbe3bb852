#!/usr/bin/env bash
# Installs the third-party tools the test suite talks to, from Debian's packages, when it can (as root).
#
#   dcmtk         storescu / storescp / echoscu: scanner and PACS peers
#   orthanc       the test PACS (checked through its REST API)
#   dicom3tools   dciodvfy, first validator of every SEG / SR / SC we write
#   pixelmed-apps + a Java runtime: pixelmed's DicomInstanceValidator / DicomSRValidator, second validator
#   systemd       systemd-analyze verifies the units in systemd/
#   chromium      headless browser for the web console tests
#   prometheus    a real Prometheus server (and promtool) scraping /metrics
#
# Called by `make test`; safe to run again (it installs only what is missing). Not root and something
# missing: it prints the one command to run and exits 0, and the tests that need a missing tool say so
# (under CI=true they fail instead).
set -euo pipefail

# tool on PATH (or file) -> Debian package
declare -A needs=(
    [dciodvfy]=dicom3tools
    [storescu]=dcmtk
    [storescp]=dcmtk
    [echoscu]=dcmtk
    [Orthanc]=orthanc
    [systemd-analyze]=systemd
    [java]=default-jre-headless
    [/usr/share/java/pixelmed.jar]=pixelmed-apps
    [chromium]=chromium
    [prometheus]=prometheus
    [promtool]=prometheus
)
missing=()
for tool in "${!needs[@]}"; do
    if [[ "$tool" == /* ]]; then
        [[ -e "$tool" ]] && continue
    else
        command -v "$tool" >/dev/null 2>&1 && continue
    fi
    missing+=("${needs[$tool]}")
done
# `make` builds .venv with the interpreter's venv module (Debian ships it separately).
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
[[ ${#missing[@]} -eq 0 ]] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')

if [[ $(id -u) -ne 0 ]]; then
    echo "test tools missing: $packages" >&2
    echo "install them once with:  sudo apt-get update && sudo apt-get install -y $packages" >&2
    echo "(the tests that need them are skipped with their reason until then)" >&2
    exit 0
fi
echo "installing test tools from Debian: $packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq $packages >/dev/null
# Where an init system runs, the packages start services on the ports of their defaults (Orthanc on
# 4242/8042, Prometheus on 9090); the tests start their own on free ports, so stop those.
for service in orthanc prometheus prometheus-node-exporter; do
    (service "$service" stop || systemctl stop "$service") >/dev/null 2>&1 || true
done
