"""Guard test: every public module, class, function, method and ``param`` parameter has a doc.

Walks the whole ``embviz`` package (app and pipeline modules included: importing them must not
need a server), like Panel's ``tests/test_docstrings.py``, and lists every missing name at once.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import param


def _public(name: str) -> bool:
    return not name.startswith("_")


#: Subpackages installed from a folder of their own (setuptools package-dir): a walk of
#: ``embviz/`` cannot see them.
ELSEWHERE = ("embviz.pipeline",)


def _modules() -> tuple[list, list[str]]:
    """Every public ``embviz`` module, imported, and the import errors met on the way."""
    names = {"embviz", *ELSEWHERE}
    for root in ["embviz", *ELSEWHERE]:
        try:
            path = importlib.import_module(root).__path__
        except Exception:  # reported by the import loop below
            continue
        # A package that fails to import is still listed, and the loop below reports its error.
        walk = pkgutil.walk_packages(path, f"{root}.", onerror=lambda name: None)
        names |= {m.name for m in walk if all(_public(part) for part in m.name.split("."))}
    modules, errors = [], []
    for name in sorted(names):
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:  # a module that fails to import cannot be checked
            errors.append(f"{name}: cannot import ({type(exc).__name__}: {exc})")
    return modules, errors


def _own_doc(cls: type) -> bool:
    """Whether ``cls`` has a docstring of its own (not inherited, not a dataclass's signature)."""
    doc = cls.__dict__.get("__doc__")
    return bool(doc and doc.strip() and not doc.startswith(f"{cls.__name__}("))


def _class_missing(cls: type, where: str) -> list[str]:
    missing = [] if _own_doc(cls) else [f"{where} (class)"]
    params = set()
    if isinstance(cls, type) and issubclass(cls, param.Parameterized):
        for pname, p in cls.param.objects(instance=False).items():
            if p.owner is cls:
                params.add(pname)
                if _public(pname) and not (p.doc and p.doc.strip()):
                    missing.append(f"{where}.{pname} (param)")
    for name, attr in vars(cls).items():
        if not _public(name) or name in params:
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if not (inspect.isfunction(attr) or isinstance(attr, property)):
            continue
        # An override inherits its base's doc (inspect.getdoc follows the class's MRO).
        if not inspect.getdoc(getattr(cls, name, attr)):
            missing.append(f"{where}.{name} (method)")
    return missing


def _is_function(obj) -> bool:
    """A plain function, or one wrapped by a decorator (functools.cache, numba.njit)."""
    return inspect.isfunction(obj) or hasattr(obj, "__wrapped__") or hasattr(obj, "py_func")


def _function_doc(obj) -> str:
    inner = getattr(obj, "py_func", None) or inspect.unwrap(obj)
    return (obj.__doc__ or inner.__doc__ or "").strip()


def _missing_docs() -> list[str]:
    modules, missing = _modules()
    for mod in modules:
        if not (mod.__doc__ and mod.__doc__.strip()):
            missing.append(f"{mod.__name__} (module)")
        for name, obj in vars(mod).items():
            if not _public(name) or getattr(obj, "__module__", None) != mod.__name__:
                continue  # private, or imported from elsewhere (checked where it is defined)
            where = f"{mod.__name__}.{name}"
            if inspect.isclass(obj):
                missing += _class_missing(obj, where)
            elif _is_function(obj) and not _function_doc(obj):
                missing.append(f"{where} (function)")
    return sorted(set(missing))


def test_every_public_name_has_a_doc():
    missing = _missing_docs()
    assert not missing, f"{len(missing)} public names have no docstring or doc:\n" + "\n".join(
        missing
    )
