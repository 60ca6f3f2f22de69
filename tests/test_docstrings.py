"""Every public class of dmha_modules carries a docstring example (run by --doctest-modules)."""

import importlib
import inspect
import pkgutil

import dmha_modules


def public_classes():
    for info in pkgutil.walk_packages(dmha_modules.__path__, prefix="dmha_modules."):
        if info.name.endswith(".__main__"):  # runs the command line when imported
            continue
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and not name.startswith("_"):
                yield module.__name__, name, obj


def test_every_public_class_has_a_runnable_example():
    classes = list(public_classes())
    assert len(classes) >= 10
    missing = [
        f"{mod}.{name}"
        for mod, name, cls in classes
        if ">>>" not in (cls.__doc__ or "")
    ]
    assert not missing, f"public classes without a docstring example: {missing}"
