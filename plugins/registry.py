"""Finding plugins and registering them with TensorRT.

* the plugins trtx defines: every module of ``plugins.ops`` (:func:`discover`), looked up by name, version and
  namespace (:func:`find`);
* TensorRT's plugin registry (:func:`register`) and the engine-metadata entry that lets the runtime re-register
  the plugin before deserializing (:func:`add_to_network`, :func:`register_from_metadata`);
* the torch reference of a plugin layer, for the reference executor (:func:`reference_for_layer`).
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from plugins import adapter
from plugins.errors import PluginError
from plugins.plugin import PLUGINS, Plugin

#: the package whose modules are trtx's plugins, one module per plugin (with its .cu files beside it)
OPS_PACKAGE = "plugins.ops"


def metadata_entry(cls: type[Plugin]) -> dict[str, str]:
    """The engine-metadata record of a plugin (``.engine.json`` ``plugins`` list)."""
    return {"name": cls.name, "version": str(cls.version), "namespace": cls.namespace}


def discover() -> list[str]:
    """Import every module of ``plugins.ops`` (each defines its plugins and kernels); return their names."""
    package = importlib.import_module(OPS_PACKAGE)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = f"{OPS_PACKAGE}.{info.name}"
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(f"cannot import {module}: {type(exc).__name__}: {exc}") from exc
        names.append(module)
    return names


def find(name: str, version: str = "1", namespace: str = "trtx") -> type[Plugin]:
    """The Plugin class with this name, version and namespace (importing ``plugins.ops`` if needed)."""
    key = (namespace, name, str(version))
    if key not in PLUGINS:
        discover()
    try:
        return PLUGINS[key]
    except KeyError:
        known_ = ", ".join(f"{ns}::{n} v{v}" for ns, n, v in sorted(PLUGINS)) or "none"
        raise PluginError(
            f"no plugin {namespace}::{name} version {version} in trtx's plugins (known: {known_})"
        ) from None


_creators: dict[tuple[str, str, str], Any] = {}
_register_lock = threading.Lock()


def register(cls: type[Plugin]):
    """Register ``cls``'s creator in TensorRT's plugin registry (once); returns the creator."""
    key = (cls.namespace, cls.name, str(cls.version))
    with _register_lock:
        if key in _creators:
            return _creators[key]
        registry = adapter.trt_module().get_plugin_registry()
        existing = registry.get_creator(cls.name, str(cls.version), cls.namespace)
        if existing is not None:
            raise PluginError(
                f"TensorRT's plugin registry already holds a different creator for {cls.namespace}::{cls.name} "
                f"v{cls.version} ({type(existing).__name__}); rename or re-version one of them"
            )
        creator = adapter.trt_classes()[1](cls)
        if not registry.register_creator(creator, cls.namespace):
            raise PluginError(f"TensorRT refused to register plugin creator {cls.namespace}::{cls.name} v{cls.version}")
        _creators[key] = creator
        return creator


def register_from_metadata(meta: Mapping[str, Any] | Sequence[Mapping[str, str]]) -> list[type[Plugin]]:
    """Register every plugin an engine uses (``meta["plugins"]`` of its .json) before deserializing it."""
    entries = meta.get("plugins", []) if isinstance(meta, Mapping) else meta
    classes = []
    for entry in entries or []:
        if isinstance(entry, Mapping) and entry.get("aot"):
            continue  # an AOT plugin: its kernel is in the engine, TensorRT needs no creator
        try:
            name, version, namespace = entry["name"], str(entry.get("version", "1")), entry.get("namespace", "")
        except (KeyError, TypeError, AttributeError):
            raise PluginError(f"engine metadata has a malformed plugin entry {entry!r}") from None
        try:
            cls = find(name, version, namespace)
        except PluginError as exc:
            raise PluginError(
                f"the engine needs plugin {namespace}::{name} v{version}, which is not available: {exc}"
            ) from None
        register(cls)
        classes.append(cls)
    return classes


def add_to_network(
    cls: type[Plugin], net: Any, inputs: Sequence, *, name: str | None = None, aot: bool | None = None, **fields: Any
):
    """Append a ``cls`` plugin layer to ``net`` (a trtx Net); record it in ``net.plugins`` for the engine metadata.

    ``aot`` None: the kernel is built into the engine (an AOT plugin, :mod:`plugins.aot`) where the backend can
    (full TensorRT >= 10.9) and the plugin has an ahead-of-time form, else an IPluginV3 layer; True/False
    insist. The IPluginV3 object is handed to ``net.keep_plugin``: TensorRT holds only a pointer to it.
    """
    impl = cls(**fields)
    be = getattr(net, "backend", None)
    if be is None:
        from trtx_base import backend

        be = backend.get()
    if not be.has_plugin_layers:
        raise PluginError(
            f"plugin {cls.name}: {be.name} {be.version} has no plugin layers (INetworkDefinition.add_plugin_v3); "
            f"mark its inputs as network outputs and run plugins.{cls.__module__.rsplit('.', 1)[-1]}.run(...) "
            "(GPU kernels) or .reference(...) (torch) on them after the engine"
        )
    if aot is None:
        aot = be.has_aot_plugins and cls.has_aot()
    if aot:
        if not be.has_aot_plugins:
            raise PluginError(
                f"plugin {cls.name}: {be.name} {be.version} cannot build plugin kernels into the engine "
                "(tensorrt.plugin.aot_impl needs TensorRT >= 10.9); use aot=False for the IPluginV3 layer"
            )
        if not cls.has_aot():
            raise PluginError(f"plugin {cls.name} has no ahead-of-time form (no aot_launch); use aot=False")
        from plugins import aot as ahead_of_time

        layer = ahead_of_time.add_layer(impl, net, list(inputs))
        entry = {**metadata_entry(cls), "aot": True}
    else:
        register(cls)
        plugin = impl.trt_plugin()
        layer = net.network.add_plugin_v3(list(inputs), [], plugin)
        net.keep_plugin(plugin)
        entry = metadata_entry(cls)
    if layer is None:
        said = " | ".join(net.logger.errors()) if hasattr(net, "logger") else ""
        raise PluginError(f"TensorRT refused plugin layer {cls.name} ({name or 'unnamed'}): {said or 'no message'}")
    if entry not in net.plugins:
        net.plugins.append(entry)
    if name:
        net.name(layer, name)
    return layer


def plugin_of(obj: Any) -> Plugin:
    """Our Plugin instance behind a plugin layer, an IPluginV3 object, or a Plugin."""
    if isinstance(obj, Plugin):
        return obj
    plugin = getattr(obj, "plugin", obj)  # IPluginV3Layer.plugin
    impl = getattr(plugin, "impl", None)
    if isinstance(impl, Plugin):
        return impl
    trt = adapter.trt_module()
    try:
        core_if = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
        runtime_if = plugin.get_capability_interface(trt.PluginCapabilityType.RUNTIME)
        name, version, namespace = core_if.plugin_name, core_if.plugin_version, core_if.plugin_namespace
    except Exception as exc:
        where = getattr(obj, "name", type(obj).__name__)
        raise PluginError(f"layer {where}: not an IPluginV3 plugin layer ({type(exc).__name__}: {exc})") from None
    if namespace.endswith("_aot"):  # a tensorrt.plugin AOT layer (plugins.aot): fields in its attributes
        from plugins import aot

        return aot.declaration_of(plugin, namespace, name)
    cls = find(name, version, namespace)
    return cls.from_field_collection(runtime_if.get_fields_to_serialize())


def reference_for_layer(layer: Any) -> Callable[[list], list]:
    """The torch reference of a plugin layer (IPluginV3Layer), bound to the layer's field values."""
    impl = plugin_of(layer)
    return lambda inputs: list(impl.reference(list(inputs)))
