#!/bin/sh
# Post-build script: $1 is the target directory. /init prints /etc/peagent-release at boot;
# the Debian build writes the same file.
set -eu

target=$1
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$here/../../../../peagent/__init__.py")
echo "${version:-unknown} (buildroot ${BR2_VERSION_FULL:-unknown})" > "$target/etc/peagent-release"
