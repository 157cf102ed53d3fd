"""The node agent: a long-running process that serves the plugin's CNI requests warm."""
