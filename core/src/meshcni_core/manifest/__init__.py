"""The operator interface: Istio's CNI values, istioctl-style, resolved and validated.

``setpath`` parses ``--set`` flags, ``operator`` reads IstioOperator overlay files, ``values``
holds the schema (the seed page's table plus meshcni's own keys) and resolves the layers.
"""
