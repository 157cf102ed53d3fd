"""meshcni's test tooling, a wheel of its own so that the runtime (``meshcni-core``, the host
bundle, the install-cni image) carries none of it: the pytest plugin for extension authors
(``pytest_plugin``, ``harness``), throwaway network namespaces (``netlab``), the real etcd and
kube-apiserver (``controlplane``), the HTTPS stand-in for faults a real server cannot produce
(``apiserver``), a libcni-style chain runner (``chain``) and ``make demo`` (``demo``)."""
