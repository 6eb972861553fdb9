"""The public import names DESIGN.md promises, and a complete, sorted ``__all__``."""

from __future__ import annotations

import importlib
import types

import pytest

import websession
import websession.stores


def public_names(module: types.ModuleType) -> set[str]:
    """Names a module defines or re-exports that are neither private nor submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
    }


@pytest.mark.parametrize("module", [websession, websession.stores], ids=lambda m: m.__name__)
def test_all_is_sorted_and_unique(module: types.ModuleType) -> None:
    assert list(module.__all__) == sorted(module.__all__)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", [websession, websession.stores], ids=lambda m: m.__name__)
def test_all_lists_every_public_name(module: types.ModuleType) -> None:
    names = public_names(module)
    assert "SessionError" in names or "Store" in names  # the scan itself sees the module
    missing = names - set(module.__all__)
    assert not missing, f"public but not in {module.__name__}.__all__: {sorted(missing)}"


def test_everything_in_all_imports() -> None:
    namespace: dict[str, object] = {}
    exec("from websession import *", namespace)
    assert set(websession.__all__) <= set(namespace)
    for name in websession.__all__:
        assert getattr(websession, name) is not None


@pytest.mark.parametrize(
    "name", ["Session", "SessionConfig", "SessionError", "store_from_url", "__version__"]
)
def test_design_names_in_websession(name: str) -> None:
    assert name in websession.__all__
    assert hasattr(websession, name)


def test_errors_share_one_base() -> None:
    for name in websession.__all__:
        value = getattr(websession, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, websession.SessionError), name


@pytest.mark.parametrize("name", ["MemoryStore", "CookieStore", "AsyncMemoryStore"])
def test_core_stores_import(name: str) -> None:
    assert name in websession.stores.__all__
    assert isinstance(getattr(websession.stores, name), type)


@pytest.mark.parametrize("name", ["FileStore", "AsyncFileStore", "SQLiteStore", "AsyncSQLiteStore"])
def test_embedded_stores_import(name: str) -> None:
    assert name in websession.stores.__all__
    namespace: dict[str, object] = {}
    exec(f"from websession.stores import {name}", namespace)
    assert isinstance(namespace[name], type)


def test_every_name_in_stores_all_imports() -> None:
    for name in websession.stores.__all__:
        assert getattr(websession.stores, name) is not None, name


def test_unknown_store_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchStore"):
        _ = websession.stores.NoSuchStore


@pytest.mark.parametrize("module", ["websession.wsgi", "websession.asgi"])
def test_middlewares_import(module: str) -> None:
    middleware = importlib.import_module(module).SessionMiddleware
    assert isinstance(middleware, type)
    assert middleware.__module__ == module


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert websession.__version__ == version("websession")


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("websession").joinpath("py.typed").is_file()


def test_a_store_contract_without_make_store_cannot_be_instantiated() -> None:
    from websession.testing import AsyncStoreContract, StoreContract

    class Forgot(StoreContract):
        pass

    class AsyncForgot(AsyncStoreContract):
        pass

    for contract in (Forgot, AsyncForgot):
        with pytest.raises(TypeError, match="make_store"):
            contract()
