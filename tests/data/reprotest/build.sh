# reprotest's build command (tests/reprotesting.py), run in each build's copy of the
# source tree: it runs its arguments, the build, as KHIB_TEST_BUILD_USER and that user's
# group when reprotest's environment variation sets it (the experiment): in a user
# namespace of its own, unprivileged there, which maps them onto the invoking user, whose
# build cache they use as their own. Before the build, it notes in
# $KHIB_TEST_SEEN/<the tree's folder> what the build sees: its user and group, the clock,
# and recipes/ listed three times, each in the order the file system gives.
set -eu
if [ -n "${KHIB_TEST_BUILD_USER:-}" ] && [ "$(id -un)" != "$KHIB_TEST_BUILD_USER" ]; then
	exec unshare --map-user="$KHIB_TEST_BUILD_USER" \
		--map-group="$(id -gn "$KHIB_TEST_BUILD_USER")" sh "$0" "$@"
fi
{
	echo "$(id -un) $(id -gn)"
	date +%s
	for _ in 1 2 3; do echo $(ls -U recipes); done
} > "$KHIB_TEST_SEEN/${PWD##*/}"
exec "$@"
