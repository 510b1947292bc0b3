# shellcheck shell=bash
# Loaded by every bats file: assertion libraries and the repo's paths.
bats_load_library bats-support
bats_load_library bats-assert
bats_load_library bats-file

REPO_ROOT="$(cd "$(dirname "${BATS_TEST_FILENAME}")/../.." && pwd)"
export REPO_ROOT
