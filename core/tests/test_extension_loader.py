"""stevedore selects exactly the enabled extensions; pluggy dispatches; errors name the culprit."""

import importlib
import importlib.metadata
import re
import sys
import textwrap

import pytest
from stevedore import ExtensionManager

from meshcni_core import extensions
from meshcni_hooks.errors import ExtensionError


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install a throwaway distribution (module + .dist-info with entry points) on sys.path."""

    def make(dist: str, module: str, source: str, entry_points: dict[str, str], requires=("meshcni-hooks>=0.1",)):
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        requires_lines = "".join(f"Requires-Dist: {r}\n" for r in requires)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n{requires_lines}")
        eps = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[meshcni.extensions]\n{eps}")
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
        monkeypatch.delitem(sys.modules, module, raising=False)
        # stevedore caches each group's entry points for the life of the process.
        monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})

    return make


def test_enabled_extensions_register_in_order():
    pm = extensions.new_manager(["kubevirt", "tproxy"])
    names = [name for name, _ in pm.list_name_plugin()]
    assert names[-2:] == ["kubevirt", "tproxy"]
    assert set(extensions.redirect_modes(pm)) == {"REDIRECT", "TPROXY"}


def test_installed_is_not_enabled():
    pm = extensions.new_manager([])
    assert set(extensions.redirect_modes(pm)) == {"REDIRECT"}
    assert {"tproxy", "kubevirt", "acme-opt-out"} <= {e.name for e in extensions.installed_extensions()}


def test_missing_extension_names_itself_and_lists_installed():
    with pytest.raises(ExtensionError, match=r"not installed: tproxyy \(installed: .*tproxy"):
        extensions.new_manager(["tproxyy"])


def test_duplicate_listing_is_refused():
    with pytest.raises(ExtensionError, match="more than once: tproxy"):
        extensions.new_manager(["tproxy", "tproxy"])


def test_broken_extension_names_itself(fake_distribution):
    fake_distribution("acme-broken", "acme_broken", "raise RuntimeError('boom at import')", {"acme-broken": "acme_broken:X"})
    with pytest.raises(ExtensionError, match="'acme-broken'.*failed to load: RuntimeError: boom at import"):
        extensions.new_manager(["acme-broken"])


def test_misspelt_hook_fails_at_start_up(fake_distribution):
    source = """
        from meshcni_hooks import hookimpl
        class Typo:
            @hookimpl
            def meshcni_pod_verdit(self, pod):
                return None
    """
    fake_distribution("acme-typo", "acme_typo", source, {"acme-typo": "acme_typo:Typo"})
    with pytest.raises(ExtensionError, match="acme-typo.*unknown hook"):
        extensions.new_manager(["acme-typo"])


def test_second_provider_of_a_mode_names_both(fake_distribution):
    source = """
        from meshcni_hooks import hookimpl
        from meshcni_hooks.types import RedirectMode
        class Clash:
            @hookimpl
            def meshcni_register_redirect_modes(self):
                return [RedirectMode(name="TPROXY", build_inbound=lambda spec, family: ([], [], []))]
    """
    fake_distribution("acme-clash", "acme_clash", source, {"acme-clash": "acme_clash:Clash"})
    pm = extensions.new_manager(["tproxy", "acme-clash"])
    with pytest.raises(ExtensionError, match="'TPROXY' is provided twice: by tproxy and by acme-clash"):
        extensions.redirect_modes(pm)


def test_incompatible_hooks_requirement_is_refused(fake_distribution):
    fake_distribution(
        "acme-future", "acme_future", "class X: pass", {"acme-future": "acme_future:X"},
        requires=("meshcni-hooks>=7",),
    )
    installed = re.escape(importlib.metadata.version("meshcni-hooks"))
    with pytest.raises(ExtensionError, match=rf"acme-future.*requires meshcni-hooks>=7, but {installed} is installed"):
        extensions.new_manager(["acme-future"])


def test_every_manager_is_fresh():
    first, second = extensions.new_manager(["tproxy"]), extensions.new_manager([])
    assert first is not second and "tproxy" not in dict(second.list_name_plugin())


def test_a_crashing_extension_is_named_with_its_distribution(fake_distribution):
    source = """
        from meshcni_hooks import hookimpl
        class Crash:
            @hookimpl
            def meshcni_pod_verdict(self, pod, config):
                raise KeyError("oops")
    """
    fake_distribution("acme-crash", "acme_crash", source, {"acme-crash": "acme_crash:Crash"})
    from meshcni_hooks.errors import MeshcniError
    from meshcni_testing.harness import build_harness, make_pod

    harness = build_harness(extensions=("acme-crash",))
    with pytest.raises(MeshcniError) as info:
        harness.add(make_pod())
    assert info.value.stage == "eligibility"
    assert "extension acme-crash (acme-crash 1.0)" in info.value.msg and "KeyError" in info.value.msg


def test_a_failing_builtin_is_named_precisely(monkeypatch):
    from meshcni_core.builtin import annotations
    from meshcni_hooks.errors import MeshcniError
    from meshcni_testing.harness import build_harness, make_pod

    def broken(_annotations):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(annotations, "redirect_spec_from_annotations", broken)
    with pytest.raises(MeshcniError) as info:
        build_harness().add(make_pod())
    assert info.value.stage == "redirect-spec"
    assert "built-in plugin builtin:annotations" in info.value.msg


def test_the_extensions_table_keeps_its_columns_for_long_names(capsys):
    from meshcni_core.cli.main import main

    assert main(["extensions", "--enable", "platform-openshift"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    column = header.index("ENABLED")
    assert rows and all(row[column - 1] == " " and row[column] != " " for row in rows), rows
    assert any(row.startswith("platform-openshift ") and row[column:].startswith("#1") for row in rows)


def test_a_hook_with_an_argument_the_spec_lacks_names_the_distribution(fake_distribution):
    source = """
        from meshcni_hooks import hookimpl

        class BadArg:
            @hookimpl
            def meshcni_pod_verdict(self, pod, config, colour):
                return None
    """
    fake_distribution("acme-badarg", "acme_badarg", source, {"acme-badarg": "acme_badarg:BadArg"})
    with pytest.raises(ExtensionError, match=r"extension 'acme-badarg' \(acme-badarg 1\.0\) could not be registered"):
        extensions.new_manager(["acme-badarg"])


@pytest.mark.parametrize("hook", ["meshcni_register_claims", "meshcni_register_redirect_modes"])
def test_an_error_in_a_register_hook_names_the_extension_and_distribution(fake_distribution, hook):
    from meshcni_core.pipeline import Pipeline
    from meshcni_hooks.errors import MeshcniError

    source = f"""
        from meshcni_hooks import hookimpl

        class Fails:
            @hookimpl
            def {hook}(self):
                raise KeyError("boom")
    """
    fake_distribution("acme-regfail", "acme_regfail", source, {"acme-regfail": "acme_regfail:Fails"})
    with pytest.raises(MeshcniError, match=r"in extension acme-regfail \(acme-regfail 1\.0\): KeyError"):
        Pipeline.from_netconf({"cniVersion": "1.0.0", "name": "n", "extensions": ["acme-regfail"]}, {})


def test_an_annotation_only_a_disabled_installed_extension_claims_fails_naming_it(fake_distribution):
    from meshcni_hooks.errors import AnnotationError
    from meshcni_testing.harness import build_harness, make_pod

    source = """
        from meshcni_hooks import hookimpl
        from meshcni_hooks.types import Claim

        class Vm:
            @hookimpl
            def meshcni_register_claims(self):
                return [Claim(extension="acme-vm", annotations=("acme.istio.io/vm-interfaces",))]
    """
    fake_distribution("acme-vm", "acme_vm", source, {"acme-vm": "acme_vm:Vm"})
    pod = make_pod(annotations={"acme.istio.io/vm-interfaces": "net1"})
    with pytest.raises(AnnotationError, match="enable the 'acme-vm' extension") as info:
        build_harness().add(pod)
    assert info.value.annotation == "acme.istio.io/vm-interfaces" and info.value.code == 103
    assert build_harness(extensions=("acme-vm",)).add(pod).redirect
