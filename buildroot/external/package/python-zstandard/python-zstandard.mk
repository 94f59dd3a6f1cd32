################################################################################
#
# python-zstandard
#
################################################################################

PYTHON_ZSTANDARD_VERSION = 0.25.0
PYTHON_ZSTANDARD_SOURCE = zstandard-$(PYTHON_ZSTANDARD_VERSION).tar.gz
# The sdist, as pip downloads it (see external.mk).
PYTHON_ZSTANDARD_SITE = file://$(PEAGENT_SDIST_DIR)
PYTHON_ZSTANDARD_SETUP_TYPE = setuptools
PYTHON_ZSTANDARD_LICENSE = BSD-3-Clause, BSD-3-Clause or GPL-2.0 (bundled zstd)
PYTHON_ZSTANDARD_LICENSE_FILES = LICENSE zstd/LICENSE zstd/COPYING
# Only the C backend: the optional CFFI one would need cffi at build and run time, and its
# pyproject pins cffi by Python version (~=1.17 or >=2.0), which the build-dependency check of
# "python -m build" would hold against whatever host-python-cffi this Buildroot has. setup.py
# takes --no-cffi-backend from its argv, which setuptools' --build-option passes through.
PYTHON_ZSTANDARD_BUILD_OPTS = \
	--skip-dependency-check \
	-C--build-option=--no-cffi-backend

$(eval $(python-package))
