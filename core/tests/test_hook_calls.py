"""Every hook is called through pluggy: a ``wrapper=True`` implementation sees every call."""

import inspect
import textwrap

from meshcni_core import extensions
from meshcni_core.hookcalls import HookCalls
from meshcni_hooks import hookimpl, spec
from meshcni_hooks.types import ManifestValues, NetnsFacts, NodeFacts, Rule, Target
from meshcni_testing.harness import build_harness, make_pod

HOOKS = {name: f for name, f in vars(spec).items() if name.startswith("meshcni_") and inspect.isfunction(f)}


def wrapping_everything():
    """A plugin with a ``wrapper=True`` implementation of every hook, recording each call."""
    namespace = {"hookimpl": hookimpl}
    body = ""
    for name, function in HOOKS.items():
        params = ", ".join(["self", *inspect.signature(function).parameters])
        body += f"""
            @hookimpl(wrapper=True)
            def {name}({params}):
                self.seen.append({name!r})
                return (yield)
        """
    exec(textwrap.dedent("class Wrapper:\n    seen: list\n" + textwrap.indent(textwrap.dedent(body), "    ")), namespace)
    wrapper = namespace["Wrapper"]()
    wrapper.seen = []
    return wrapper


class ExtraRule:
    @hookimpl
    def meshcni_extra_rules(self, family):
        return [Rule(family, "nat", "PREROUTING", ("-i", "net9", "-j", "RETURN"), head=True, source="extra")]


def test_a_wrapper_on_every_hook_sees_its_call():
    wrapper = wrapping_everything()
    harness = build_harness(wrapper, ExtraRule())
    pipeline = harness.pipeline
    decision = harness.add(make_pod())
    pipeline.delete(Target(netns="/nonexistent"), make_pod())
    hooks = HookCalls(pipeline.pm)
    hooks.repair_policies()
    hooks.platforms()
    hooks.manifest_objects(ManifestValues(namespace="istio-system", cni={}))
    hooks.install_check(NodeFacts(platform="", host_conf_dir="", conf_dir="", bin_dir="", bin_files=frozenset(),
                                  chained=True, conf_files=(), target_file="", network_name="",
                                  primary_plugin_types=()))
    assert set(wrapper.seen) == set(HOOKS), f"not seen: {sorted(set(HOOKS) - set(wrapper.seen))}"
    # The wrapper passed results through unchanged: the plan holds the contributed rule, no None.
    assert decision.redirect and None not in decision.plan.rules
    assert "-i net9 -j RETURN" in [r.text for r in decision.plan.rules]


def test_extra_rules_keep_registration_order_through_pluggy():
    class First:
        @hookimpl
        def meshcni_extra_rules(self, family):
            return [Rule(family, "nat", "PREROUTING", ("-i", "one", "-j", "RETURN"), source="first")]

    class Second:
        @hookimpl
        def meshcni_extra_rules(self, family):
            return [Rule(family, "nat", "PREROUTING", ("-i", "two", "-j", "RETURN"), source="second")]

    plan = build_harness(First(), Second()).add(make_pod(), NetnsFacts(interfaces=("lo", "eth0"))).plan
    assert [r.source for r in plan.rules if r.source in ("first", "second")] == ["first", "second"]


def test_pod_annotations_and_extension_settings_are_read_only():
    seen = {}

    class Peek:
        @hookimpl
        def meshcni_pod_verdict(self, pod, config):
            seen["annotations"], seen["settings"] = pod.annotations, config.extension_settings

    build_harness(Peek()).add(make_pod())
    assert_read_only(seen)


def assert_read_only(seen):
    for name, mapping in seen.items():
        try:
            mapping["x"] = "y"
        except TypeError:
            continue
        raise AssertionError(f"{name} ({type(mapping).__name__}) crossing a hook is writable")


def test_registration_records_are_collected_through_pluggy():
    assert set(extensions.redirect_modes(extensions.new_manager())) == {"REDIRECT"}


def test_the_netconf_and_environment_given_to_load_config_are_read_only():
    seen = {}

    class Peek:
        @hookimpl(wrapper=True)
        def meshcni_load_config(self, netconf, env):
            seen["netconf"], seen["env"] = netconf, env
            return (yield)

    build_harness(Peek(), kubernetes={"exclude_namespaces": ["kube-system"]})
    assert_read_only(seen)
    # however deep: the nested blocks too, and their lists cannot grow
    assert_read_only({"netconf.kubernetes": seen["netconf"]["kubernetes"]})
    assert seen["netconf"]["kubernetes"]["exclude_namespaces"] == ("kube-system",)


def test_the_install_values_given_to_manifest_objects_are_read_only_however_deep():
    seen = {}

    class Peek:
        @hookimpl
        def meshcni_manifest_objects(self, values):
            seen["cni"], seen["cni.platformSettings"] = values.cni, values.cni["platformSettings"]
            seen["namespaces"] = values.cni["platformSettings"]["applicationNamespaces"]
            return []

    pm = extensions.new_manager()
    pm.register(Peek(), name="test:peek")
    given = {"platformSettings": {"applicationNamespaces": ["app"]}}
    HookCalls(pm).manifest_objects(ManifestValues(namespace="istio-system", cni=given))
    namespaces = seen.pop("namespaces")
    assert_read_only(seen)
    assert namespaces == ("app",) and given == {"platformSettings": {"applicationNamespaces": ["app"]}}


def test_a_manifest_object_without_kind_is_refused_naming_it():
    import pytest

    from meshcni_hooks.errors import ExtensionError

    class Bad:
        @hookimpl
        def meshcni_manifest_objects(self, values):
            return [{"apiVersion": "v1", "metadata": {"name": "x"}}]

    pm = extensions.new_manager()
    pm.register(Bad(), name="test:bad")
    with pytest.raises(ExtensionError, match="not a Kubernetes object"):
        HookCalls(pm).manifest_objects(ManifestValues(namespace="istio-system", cni={}))
