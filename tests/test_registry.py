import pytest

from medclf.errors import ConfigError
from medclf.registry import Registry


def test_register_get_and_list():
    reg = Registry[int]("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("a") == 1
    assert reg.names() == ["a", "b"]
    assert "b" in reg


def test_failed_lookup_lists_names_and_suggests():
    reg = Registry[int]("widget")
    reg.register("focal")(1)
    reg.register("cross_entropy")(2)
    with pytest.raises(ConfigError, match=r"Unknown widget 'focl'\. Did you mean 'focal'\? Registered widgets: cross_entropy, focal\."):
        reg.get("focl")


def test_a_name_registers_once():
    reg = Registry[int]("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
