"""peagent: the agent of a pre-installation environment that deploys operating systems safely.

It boots from the network or a USB stick, finds out which machine it runs on, picks the target
disk by rules that refuse ambiguity, streams an image from a distribution point while verifying
every byte, and reports what it does. See README.md and docs/ for the whole picture.
"""

__version__ = "0.1.0"
