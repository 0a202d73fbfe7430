"""acm_exp.registry: the one name -> thing pattern behind merge methods, task families and coefficient
providers, and the lazy module attributes of the light packages."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from acm_exp.errors import ConfigError
from acm_exp.registry import Registry, lazy_attributes, resolve_location


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A module ``registry_plugin`` on sys.path whose import registers ``"plugged"`` in REGISTRY (set
    by the test before the import) and exposes ``THING``; removed from sys.modules afterwards."""
    (tmp_path / "registry_plugin.py").write_text(
        "import registry_target\nTHING = object()\nregistry_target.REGISTRY.add('plugged', 'plugged-thing')\n"
    )
    target = types.ModuleType("registry_target")
    target.REGISTRY = Registry("scratch")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "registry_target", target)
    monkeypatch.delitem(sys.modules, "registry_plugin", raising=False)
    yield target
    sys.modules.pop("registry_plugin", None)


def test_an_unknown_name_raises_the_registrys_error_in_one_line_listing_the_known_names():
    registry = Registry("widget", declared={"zeta": "json:dumps"}, error=ConfigError)
    registry.add("alpha", 1)
    with pytest.raises(ConfigError) as error:
        registry.get("omega")
    assert str(error.value) == "widget 'omega' is unknown; expected one of ('alpha', 'zeta')"
    assert "\n" not in str(error.value)


def test_the_unknown_message_can_be_worded_by_the_registry_and_defaults_to_lookup_error():
    registry = Registry("merge method", unknown="unknown {kind} {name!r}; expected one of {known}")
    registry.add("ties", "t")
    with pytest.raises(LookupError, match=r"^unknown merge method 'slerp'; expected one of \('ties',\)$"):
        registry.get("slerp")


def test_a_declared_name_is_imported_on_first_lookup_not_before(plugin_module):
    registry = Registry("plugin", declared={"thing": "registry_plugin:THING"})
    assert "thing" in registry and registry.names() == ("thing",)
    assert "registry_plugin" not in sys.modules
    thing = registry.get("thing")
    assert "registry_plugin" in sys.modules
    assert thing is sys.modules["registry_plugin"].THING
    assert registry.get("thing") is thing


def test_a_declared_module_registers_its_name_when_imported(plugin_module):
    registry = Registry("plugin", declared={"plugged": "registry_plugin"})
    plugin_module.REGISTRY = registry
    assert "registry_plugin" not in sys.modules
    assert registry.get("plugged") == "plugged-thing"
    assert registry.as_dict() == {"plugged": "plugged-thing"}


def test_a_declared_module_that_does_not_register_its_name_is_an_error(plugin_module):
    registry = Registry("plugin", declared={"missing": "registry_plugin"})
    plugin_module.REGISTRY = Registry("elsewhere")
    with pytest.raises(RuntimeError, match="plugin 'missing': importing registry_plugin did not register it"):
        registry.get("missing")


def test_registering_another_thing_under_a_taken_name_is_an_error_the_same_thing_again_is_not():
    registry: Registry[object] = Registry("widget")
    first = object()
    assert registry.add("a", first) is first
    assert registry.add("a", first) is first
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        registry.add("a", object())
    registry.declare("b", "json:dumps")
    with pytest.raises(ValueError, match="widget 'b' is already declared at json:dumps"):
        registry.declare("b", "json:loads")


def test_the_decorator_registers_and_returns_the_class_and_remove_forgets_a_name():
    registry: Registry[type] = Registry("provider")

    @registry.register("mine")
    class Mine:
        pass

    assert registry.get("mine") is Mine and list(registry) == ["mine"] and len(registry) == 1
    registry.remove("mine")
    assert "mine" not in registry and registry.names() == ()


def test_a_registry_over_a_callers_dict_writes_there():
    entries: dict[str, int] = {}
    Registry("number", entries=entries).add("one", 1)
    assert entries == {"one": 1}


def test_resolve_location_reads_an_attribute_or_a_module():
    import json

    assert resolve_location("json:dumps") is json.dumps
    assert resolve_location("json") is json


def test_lazy_attributes_import_a_name_on_first_use_and_refuse_others(plugin_module):
    getattr_ = lazy_attributes("light", {"THING": "registry_plugin"})
    assert "registry_plugin" not in sys.modules
    assert getattr_("THING") is sys.modules["registry_plugin"].THING
    with pytest.raises(AttributeError, match="module 'light' has no attribute 'other'"):
        getattr_("other")


# The three registries of the package


def test_the_packages_registries_keep_their_names_and_errors():
    from acm_exp.acm.provider import PROVIDER_MODULES, PROVIDERS, get_provider
    from acm_exp.eval.tasks import BUILTIN_MODULES, FAMILIES, get_task
    from acm_exp.merge import get_method

    with pytest.raises(ConfigError, match=r"^unknown merge method 'slerp'; expected one of \('acm_average'"):
        get_method("slerp")
    with pytest.raises(ConfigError, match=r"^task family 'nope' is unknown; expected one of \('gsm8k', 'hellaswag'"):
        get_task("nope")
    with pytest.raises(
        ConfigError, match=r"^coefficient provider 'nope' is unknown; expected one of \('acm', 'aim', 'sens'\)$"
    ):
        get_provider("nope")
    assert PROVIDER_MODULES == {name: f"acm_exp.acm.{name}_provider" for name in ("acm", "aim", "sens")}
    assert set(PROVIDERS.names()) == set(PROVIDER_MODULES)
    assert set(BUILTIN_MODULES) <= set(FAMILIES.names())
    assert get_provider("aim").name == "aim" and get_task("gsm8k").name == "gsm8k"


def test_a_provider_or_task_lookup_imports_only_its_own_module():
    code = """
import sys
from acm_exp.acm.provider import get_provider
from acm_exp.eval.tasks import get_task
get_provider("acm"); get_task("toy")
print(sorted(m for m in ("acm_exp.acm.aim_provider", "acm_exp.acm.sens_provider", "acm_exp.eval.tasks.livecodebench",
                         "acm_exp.acm.acm_provider", "acm_exp.eval.tasks.toy") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["['acm_exp.acm.acm_provider',", "'acm_exp.eval.tasks.toy']"]
