"""``meshcni install-cni``: put the plugin on the host, chain it into the node's CNI config, keep
it there, and take it out again on uninstall."""
