"""The infrastructure API's extension descriptor: isthmus' sites, endpoints and connections under ``/infra``.

neutron-server loads this file from ``api_extensions_path`` (its class name is the file name capitalized);
the service plugin that serves it is ``isthmus.neutron_plugin.infrastructure.InfrastructurePlugin``. The
resources and their attributes are defined in ``isthmus.neutron_plugin.infra_api``.
"""

from __future__ import annotations

from typing import Any

from neutron.api import extensions
from neutron.api.v2 import base
from neutron_lib.api import extensions as api_extensions
from neutron_lib.plugins import directory

from isthmus.neutron_plugin import infra_api


class Infrastructure(api_extensions.ExtensionDescriptor):
    """``/v2.0/infra/sites``, ``/v2.0/infra/endpoints``, ``/v2.0/infra/connections``."""

    @classmethod
    def get_name(cls) -> str:
        return infra_api.NAME

    @classmethod
    def get_alias(cls) -> str:
        return infra_api.ALIAS

    @classmethod
    def get_description(cls) -> str:
        return infra_api.DESCRIPTION

    @classmethod
    def get_updated(cls) -> str:
        return infra_api.UPDATED

    @classmethod
    def get_resources(cls) -> list[Any]:
        # What neutron's resource_helper.build_resource_info does, without its reading of an attribute named
        # "parent" as the parent resource of a sub-resource: a site's parent is an attribute here.
        plugin = directory.get_plugin(infra_api.PLUGIN_TYPE)
        resources = []
        for collection, attributes in infra_api.RESOURCE_ATTRIBUTE_MAP.items():
            controller = base.create_resource(collection, infra_api.SINGULAR[collection], plugin, attributes,
                                              allow_pagination=True, allow_sorting=True)
            resources.append(extensions.ResourceExtension(collection, controller, path_prefix=infra_api.PATH_PREFIX,
                                                          attr_map=attributes))
        return resources

    def get_extended_resources(self, version: str) -> dict[str, Any]:
        return dict(infra_api.RESOURCE_ATTRIBUTE_MAP) if version == "2.0" else {}
