"""The distribution point side: what ``peagent serve`` runs."""
