################################################################################
#
# python-tenacity
#
################################################################################

PYTHON_TENACITY_VERSION = 9.1.2
PYTHON_TENACITY_SOURCE = tenacity-$(PYTHON_TENACITY_VERSION).tar.gz
# The sdist, as pip downloads it (see external.mk): a PKG-INFO carries the version, so
# setuptools-scm needs no git history.
PYTHON_TENACITY_SITE = file://$(PEAGENT_SDIST_DIR)
PYTHON_TENACITY_SETUP_TYPE = setuptools
PYTHON_TENACITY_LICENSE = Apache-2.0
PYTHON_TENACITY_LICENSE_FILES = LICENSE
PYTHON_TENACITY_DEPENDENCIES = host-python-setuptools-scm

$(eval $(python-package))
