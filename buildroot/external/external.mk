# The sdists of the Python packages this tree adds are fetched by build.sh with pip, PyPI's own
# client, into this directory; the package .mk files point their file:// site at it, so no
# registry host is written in this tree. Buildroot copies them into its download directory and
# checks them against the .hash files; a download directory that already holds them needs
# neither pip nor this directory.
PEAGENT_SDIST_DIR ?= $(BASE_DIR)/peagent-sdist

# Buildroot refuses a package defined twice, and its own tree may gain a package this tree had
# to add (python-tenacity, python-zstandard): then the upstream recipe wins and ours is skipped.
PEAGENT_PACKAGE_MKS = $(sort $(wildcard $(BR2_EXTERNAL_PEAGENT_PATH)/package/*/*.mk))
include $(foreach mk,$(PEAGENT_PACKAGE_MKS),\
	$(if $(wildcard $(TOPDIR)/package/$(basename $(notdir $(mk)))/$(notdir $(mk))),,$(mk)))
