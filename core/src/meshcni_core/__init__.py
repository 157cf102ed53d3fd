"""meshcni core: the CNI plugin, the rule builder, the apply backends and the operator CLI."""
