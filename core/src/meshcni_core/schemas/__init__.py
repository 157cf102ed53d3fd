"""Validation at meshcni's configuration edges (environment variables, flags, install values).

Off the plugin's per-pod path: these modules may import marshmallow, except ``boolean``, which
stays dependency-free so any edge can use it cheaply.
"""
