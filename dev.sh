#!/usr/bin/env bash
# One entry point for the two README commands:
#   ./dev.sh serve [extra monailabel start_server args]   set up, then serve the sample data
#   ./dev.sh test  [extra pytest args]                    set up, lint/type-check, run the whole test suite
# Set-up is idempotent: it creates .venv (git-ignored) with the pinned stack once and redoes
# it only when requirements.txt or pyproject.toml change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STUDIES=${STUDIES:-.work/studies}
PORT=${PORT:-8000}

pipq() {
  # pip, minus this machine's noisy "Location ... is ignored" index warnings
  "$VENV/bin/python" -m pip -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

system_data() {
  # Real anatomies the synthetic generator reads offline (Colin27 head and brain; the ITK
  # example T1 head), and a real PACS for the DICOMweb tests (Orthanc + its DICOMweb plugin;
  # tests start their own instances on free loopback ports). Installed only when missing;
  # needs root for apt-get.
  local missing=()
  [ -f /usr/share/mricron/templates/ch2.nii.gz ] && [ -f /usr/share/mricron/templates/ch2bet.nii.gz ] \
    || missing+=(mricron-data)
  [ -f /usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz ] \
    || missing+=(insighttoolkit5-examples)
  { command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ]; } || missing+=(orthanc)
  [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ]; then
    echo "[dev.sh] missing Debian package(s) ${missing[*]}: run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "[dev.sh] installing Debian package(s) ${missing[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # The orthanc package may start a system-wide service (HTTP 8042, DICOM 4242) where
  # services can start; nothing here uses it, so it is stopped and left disabled.
  if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
    systemctl disable --now orthanc >/dev/null 2>&1 || true
  fi
}

setup() {
  local key stamp
  system_data
  key=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
  stamp="$VENV/.installed-$key"
  if [ -f "$stamp" ]; then return; fi
  echo "[dev.sh] installing the pinned stack into $VENV (first run takes a few minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  # monailabel is installed without its dependency list: that list drags in torchvision,
  # sam2, mlflow and pydicom 3, which break the server here (see README, "Install notes").
  pipq install -r requirements.txt
  pipq install --no-deps monailabel==0.8.5
  pipq install --no-deps --no-build-isolation -e .
  "$VENV/bin/python" -c "import monailabel, monai, torch, brain_tumor_mri" || { echo "[dev.sh] install failed" >&2; exit 1; }
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

studies() {
  # A working copy of the sample data as a MONAI Label datastore (never serve sample-data/
  # itself: the server writes datastore_v2.json and .lock into its studies folder).
  if [ ! -d "$STUDIES" ]; then
    "$VENV/bin/brain-tumor" import sample-data "$STUDIES" --unlabelled 4
  fi
}

checks() {
  # lint, formatting and the type check of lib/ (configured in pyproject.toml)
  "$VENV/bin/ruff" check lib tests apps
  "$VENV/bin/ruff" format --check lib tests apps
  "$VENV/bin/mypy"
}

cmd=${1:-}
shift || true
case "$cmd" in
  serve)
    setup
    studies
    exec "$VENV/bin/python" -m monailabel.main start_server --app apps/brain_tumor \
      --studies "$STUDIES" --conf models all -p "$PORT" "$@"
    ;;
  test)
    setup
    checks  # seconds; fail fast before the slower tests
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  check)
    setup
    checks
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./dev.sh serve|test|check|setup [args]" >&2
    exit 64
    ;;
esac
