# Sourced by the build scripts: heavy artifacts (the PE's root filesystem, the demo OS image)
# are cached outside the repository under a hash of their inputs, so a rebuild with the same
# inputs is a copy, and any change to an input (a package list, a script, the agent's source)
# builds afresh. PEAGENT_CACHE moves the cache (CI can keep it between runs).

PEAGENT_CACHE="${PEAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/peagent}"

# inputs_hash PATH... : a short sha256 over the names and contents of every file under PATHs.
inputs_hash() {
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum | sha256sum | cut -c1-16
}

# stage MESSAGE : a timestamped progress line on stderr.
stage() {
    printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# prune DIR KEEP : remove all but the KEEP most recently used entries of a cache directory, so
# that a cache kept between CI runs does not grow with every change of the agent.
prune() {
    [ -d "$1" ] || return 0
    find "$1" -mindepth 1 -maxdepth 1 ! -name '*.tmp.*' -printf '%T@ %p\n' | sort -rn |
        tail -n +"$(( $2 + 1 ))" | cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
}
