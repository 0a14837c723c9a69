#!/bin/sh
# hack/integration-tests.sh run|pkgs: the integration tier's tests, so that
# `make test-integration` runs each of them and none of the unit tests again
# (`go test -tags integration` alone would run the untagged tests a second
# time).
#   run   the -run pattern: the Test functions of the files whose build line
#         is exactly `//go:build integration`
#   pkgs  the packages that hold such files
# Files with more tags (`integration && bench`: tests that only measure) are
# left to their own targets.
set -eu
cd "$(dirname "$0")/.."
files=$(grep -rlx --include='*_test.go' '//go:build integration' . | sort)
case "${1:-}" in
run)
	names=$(grep -ho '^func Test[A-Za-z0-9_]*(' $files | sed 's/^func //; s/($//' | grep -vx TestMain | sort -u | paste -sd'|' -)
	echo "^($names)\$"
	;;
pkgs)
	for f in $files; do dirname "$f"; done | sort -u | paste -sd' ' -
	;;
*)
	echo "usage: $0 run|pkgs" >&2
	exit 2
	;;
esac
