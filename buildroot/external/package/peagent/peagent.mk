################################################################################
#
# peagent
#
################################################################################

# The agent of this very working tree, so that a PE built here runs the code being tested.
PEAGENT_SITE = $(BR2_EXTERNAL_PEAGENT_PATH)/../..
PEAGENT_SITE_METHOD = local
PEAGENT_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' \
	$(BR2_EXTERNAL_PEAGENT_PATH)/../../peagent/__init__.py)
# pyproject.toml builds with setuptools.build_meta; the wheel's entry point gives the peagent
# console script in /usr/bin.
PEAGENT_SETUP_TYPE = setuptools
PEAGENT_LICENSE = Apache-2.0
# A local site is rsynced whole: keep out the build outputs (a Buildroot O= under build/ would
# otherwise be copied into itself), the virtualenv, caches and what the PE does not run.
PEAGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /build --exclude /.venv --exclude /tests --exclude /bench \
	--exclude /demo --exclude /dist --exclude '*.egg-info' --exclude __pycache__ \
	--exclude .pytest_cache --exclude .ruff_cache --exclude .hypothesis

$(eval $(python-package))
