#!/usr/bin/env bash
# Validates every Kubernetes manifest under manifests/ offline (no cluster needed).
#
#   .ci/validate-manifests.sh            from anywhere in the repository
#
# 1. Schema: kubernetes-validate --strict against pinned Kubernetes versions. Strict means
#    an unknown or misspelt field fails. An unknown kind or apiVersion is only a warning in
#    kubernetes-validate, so this script fails on any WARN too.
#      - 1.29.0: the first release where native sidecars (initContainers[].restartPolicy:
#        Always) are on by default, and the oldest these manifests support;
#      - 1.33.0: native sidecars GA;
#      - 1.25.0 as well, for the files meant for clusters without native sidecars
#        (deployment-legacy-sidecar.yaml, cronjob.yaml); the oldest schema the tool ships.
# 2. Kustomize: every kustomization renders (kubectl kustomize) and its output passes the
#    same schema check. Skipped with a notice when kubectl is not installed, unless
#    REQUIRE_KUSTOMIZE=1.
# 3. Semantics: .ci/check-manifests.py (references, probes, security context, resources,
#    sizeLimit, no subPath on the credential volume, vault-rotator flag combinations).
# 4. The demo's setup script: sh -n, plus shellcheck when it is installed.
#
# Needs: python3 with kubernetes-validate (pip install kubernetes-validate==1.37.0).
set -euo pipefail

cd "$(dirname "$0")/.."

NATIVE_VERSIONS=(1.29.0 1.33.0)
LEGACY_VERSIONS=(1.25.0)
LEGACY_FILES=(manifests/deployment-legacy-sidecar.yaml manifests/cronjob.yaml)

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "kubernetes-validate not found: pip install kubernetes-validate==1.37.0" >&2
  exit 1
fi
echo "kubernetes-validate $(kubernetes-validate --version)"

failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# kv LABEL VERSION... -- FILE...: runs kubernetes-validate. It fails on a non-zero exit or on
# any WARN/ERROR line.
kv() {
  local label=$1
  shift
  local -a versions=()
  while [ "$1" != "--" ]; do
    versions+=(-k "$1")
    shift
  done
  shift
  local out rc=0
  out=$(kubernetes-validate --strict "${versions[@]}" "$@" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || grep -qE '^(WARN|ERROR|FATAL)|Couldn' <<<"$out"; then
    echo "FAIL  $label"
    grep -vE '^INFO' <<<"$out" | sed 's/^/      /'
    failed=1
  else
    echo "ok    $label ($(grep -c '^INFO' <<<"$out") checks)"
  fi
}

echo "--- schema (strict) ---"
mapfile -t files < <(find manifests -name '*.yaml' ! -name 'kustomization.yaml' | sort)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no manifests found under manifests/" >&2
  exit 1
fi
for f in "${files[@]}"; do
  kv "$f @ ${NATIVE_VERSIONS[*]}" "${NATIVE_VERSIONS[@]}" -- "$f"
done
for f in "${LEGACY_FILES[@]}"; do
  kv "$f @ ${LEGACY_VERSIONS[*]}" "${LEGACY_VERSIONS[@]}" -- "$f"
done

echo "--- kustomize ---"
mapfile -t kdirs < <(find manifests -name kustomization.yaml -exec dirname {} \; | sort)
if command -v kubectl >/dev/null 2>&1; then
  for d in "${kdirs[@]}"; do
    out="$tmp/$(tr / _ <<<"$d").yaml"
    if kubectl kustomize "$d" >"$out" 2>"$tmp/err"; then
      kv "kubectl kustomize $d @ ${NATIVE_VERSIONS[*]}" "${NATIVE_VERSIONS[@]}" -- "$out"
    else
      echo "FAIL  kubectl kustomize $d"
      sed 's/^/      /' "$tmp/err"
      failed=1
    fi
  done
elif [ "${REQUIRE_KUSTOMIZE:-0}" = 1 ]; then
  echo "FAIL  kubectl not found and REQUIRE_KUSTOMIZE=1"
  failed=1
else
  echo "skip  kubectl not found: kustomize rendering not checked (${kdirs[*]})"
fi

echo "--- semantics ---"
python3 .ci/check-manifests.py "${kdirs[@]}" || failed=1

echo "--- demo setup script ---"
for s in manifests/demo/*.sh; do
  if sh -n "$s"; then echo "ok    sh -n $s"; else echo "FAIL  sh -n $s"; failed=1; fi
  if command -v shellcheck >/dev/null 2>&1; then
    if shellcheck -s sh "$s"; then echo "ok    shellcheck $s"; else echo "FAIL  shellcheck $s"; failed=1; fi
  fi
done

if [ "$failed" -ne 0 ]; then
  echo "manifest validation FAILED" >&2
  exit 1
fi
echo "manifest validation passed"
