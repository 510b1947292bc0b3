# shellcheck shell=bash
# Loaded by every bats file: assertion libraries and the repo's paths.
bats_load_library bats-support
bats_load_library bats-assert
bats_load_library bats-file

REPO_ROOT="$(cd "$(dirname "${BATS_TEST_FILENAME}")/../.." && pwd)"
export REPO_ROOT

# setup_repo_copy REPO STUB_BIN — a copy of the scripts under REPO (configs, trainkit and the sample
# data linked, not copied) so setup scripts can write links, stamps and logs without touching the
# checkout; puts tests/bats/stubs/python-stub at STUB_BIN/python-stub.
setup_repo_copy() {
  local repo="$1" stub_bin="$2"
  mkdir -p "$repo/data" "$repo/models" "$stub_bin"
  cp -Rp "$REPO_ROOT/scripts" "$REPO_ROOT/environment-remote.yml" "$REPO_ROOT/requirements-local.txt" \
    "$REPO_ROOT/requirements-dev.txt" "$repo/"
  ln -s "$REPO_ROOT/configs" "$repo/configs"
  ln -s "$REPO_ROOT/trainkit" "$repo/trainkit"
  ln -s "$REPO_ROOT/data/sample" "$repo/data/sample"
  cp "$REPO_ROOT/tests/bats/stubs/python-stub" "$stub_bin/python-stub"
}
